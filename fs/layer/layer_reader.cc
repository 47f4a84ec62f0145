// imgfs — fs/layer/layer_reader (in progress).
