"""Writes the synthetic OCI image layouts the benchmarks mount (one copy for every bench script).

    import oci_layout
    raw = oci_layout.new_tar()               # (BytesIO, TarFile, seen-dirs set)
    oci_layout.add_dirs(t, seen, "a/b/c.txt")
    layers = oci_layout.write_layout(out, [tar_bytes, ...], gzip_level=1)

Command line (for shell loops): `python3 oci_layout.py layers LAYOUT` prints the hex digests of
the layers of the layout's first image, bottom first.
"""
import gzip
import hashlib
import json
import os
import sys
import tarfile

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


def add_dirs(t, seen, path, mtime=0):
    """Adds a directory entry (0755) for every parent of `path` not in `seen` yet."""
    parts = path.strip("/").split("/")
    for k in range(1, len(parts)):
        d = "/".join(parts[:k])
        if d not in seen:
            seen.add(d)
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            ti.mtime = mtime
            t.addfile(ti)


def write_blob(out, data):
    """Stores `data` under blobs/sha256/ of layout `out`; returns (digest, size)."""
    os.makedirs(out + "/blobs/sha256", exist_ok=True)
    h = hashlib.sha256(data).hexdigest()
    with open(f"{out}/blobs/sha256/{h}", "wb") as f:
        f.write(data)
    return "sha256:" + h, len(data)


def write_layout(out, layer_tars, gzip_level=6, ref_name="bench"):
    """Writes a one-image OCI layout: each tar gzip-compressed as a layer (bottom first), a
    linux/amd64 config with their diff_ids, the manifest, oci-layout and index.json (tagged
    `ref_name`). Returns the layer descriptors."""
    layers, diff_ids = [], []
    for data in layer_tars:
        diff_ids.append("sha256:" + hashlib.sha256(data).hexdigest())
        d, n = write_blob(out, gzip.compress(data, compresslevel=gzip_level, mtime=0))
        layers.append({"mediaType": LAYER_GZIP, "digest": d, "size": n})
    config = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
              "config": {"Cmd": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cd, cn = write_blob(out, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "digest": cd, "size": cn}, "layers": layers}
    md, mn = write_blob(out, json.dumps(manifest).encode())
    with open(out + "/oci-layout", "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(out + "/index.json", "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": MANIFEST, "digest": md, "size": mn,
            "annotations": {"org.opencontainers.image.ref.name": ref_name}}]}, f)
    return layers


def layer_hexes(out):
    """The hex digests of the layers of the first image of layout `out`, bottom first."""
    with open(out + "/index.json") as f:
        m = json.load(f)["manifests"][0]["digest"].split(":")[1]
    with open(f"{out}/blobs/sha256/{m}") as f:
        return [l["digest"].split(":")[1] for l in json.load(f)["layers"]]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "layers":
        print(" ".join(layer_hexes(sys.argv[2])))
    else:
        sys.exit("usage: oci_layout.py layers LAYOUT")
