// Must compile with imgfs_layer's include directories: its own headers and those of the
// modules it links (the control of unit.layering_refused).
#include "cache/chunk_store.h"
#include "fs/layer/layer_index.h"
#include "registry/digest.h"

int main() { return 0; }
