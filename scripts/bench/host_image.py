"""Builds the benchmark image from files of this machine (one copy for bench.sh and bench-wan.sh).

    python3 host_image.py LAYOUT SIZE_MB MIN_PATHS [FACTS_JSON]

Walks /usr/share, /usr/include, /usr/lib/python3, /usr/bin, ... (sorted, so the same machine
gives the same image) until at least SIZE_MB MB of file data and MIN_PATHS paths are taken,
regular files of at most 8 MiB and symlinks, and writes them as a 4-layer gzip OCI layout
(a quarter of the files each) tagged "bench". Text, code and libraries: it compresses about
as a distribution image does (~3:1), unlike a generated image of random bytes. FACTS_JSON, if
given, gets what bench-wan.sh reads: files, file_bytes, layer_bytes, and a small file to read
first (small, small_size: a regular file under 4 KiB from the middle of the third layer).
"""
import io
import json
import os
import sys
import tarfile

import oci_layout

SOURCES = ["/usr/share", "/usr/include", "/usr/lib/python3", "/usr/bin",
           "/usr/lib/x86_64-linux-gnu", "/usr/lib/gcc", "/usr/libexec", "/usr/lib/llvm-14"]


def pick_files(size_mb, min_paths):
    """Returns (paths, file bytes): the files and symlinks taken, in walk order."""
    budget = size_mb << 20
    dirs_seen = set()
    files = []
    total = 0
    for src in SOURCES:
        for d, dirs, names in os.walk(src):
            dirs.sort()
            for n in sorted(names):
                p = os.path.join(d, n)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if not (os.path.isfile(p) or os.path.islink(p)):
                    continue
                if os.path.isfile(p) and not os.path.islink(p):
                    if st.st_size > 8 << 20 or not os.access(p, os.R_OK):
                        continue
                    total += st.st_size
                files.append(p)
                dirs_seen.add(d)
                if total >= budget and len(files) + len(dirs_seen) >= min_paths:
                    return files, total
    return files, total


def main():
    out, size_mb, min_paths = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    files, total = pick_files(size_mb, min_paths)
    tars = []
    per = (len(files) + 3) // 4
    for i in range(4):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
            seen = set()
            for p in files[i * per:(i + 1) * per]:
                oci_layout.add_dirs(t, seen, p)
                try:
                    t.add(p, arcname=p.strip("/"), recursive=False)
                except OSError:
                    pass
        tars.append(raw.getvalue())
    layers = oci_layout.write_layout(out, tars, gzip_level=6)
    if len(sys.argv) > 4:
        third = files[2 * per:3 * per]
        small = next(p for p in third[len(third) // 2:]
                     if not os.path.islink(p) and 0 < os.path.getsize(p) < 4096)
        json.dump({"files": len(files), "file_bytes": total, "small": small.strip("/"),
                   "small_size": os.path.getsize(small),
                   "layer_bytes": sum(l["size"] for l in layers)}, open(sys.argv[4], "w"))
    print(f"{len(files)} files and symlinks, {total / 1e6:.0f} MB of file data, layers (gzip): "
          + ", ".join(f"{l['size'] / 1e6:.0f} MB" for l in layers))


if __name__ == "__main__":
    main()
