#!/usr/bin/env bash
# Lazy loading over an emulated WAN (run through `scripts/bench.sh --wan [--size-mb N]`; see
# the comment at the top of bench.sh). Measured, never asserted; not part of CI.
#
#   scripts/bench-wan.sh SIZE_MB KEEP(0|1) [IMAGE [MIN_PATHS]]
#
# IMAGE: "host" (the default) builds the image bench.sh measures from files of this machine
# (scripts/bench/host_image.py: 4 layers, text, code and libraries that compress ~3:1 as a
# distribution image does, at least SIZE_MB MB of file data and MIN_PATHS paths);
# "generated" a deterministic 2-layer image of many files of mixed sizes, ~75% of its bytes
# random (so it compresses hardly at all and the link's rate bounds every whole-tree read).
#
# Environment: IMGFS_BENCH_DELAY_MS (one-way, default 20), IMGFS_BENCH_MBIT (default 200),
# IMGFS_BIN (the imgfs binary; default: build/plain, built first).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
size_mb=${1:-1200}
keep=${2:-0}
image=${3:-host}
min_paths=${4:-50000}
delay_ms=${IMGFS_BENCH_DELAY_MS:-20}
mbit=${IMGFS_BENCH_MBIT:-200}

[ "$(id -u)" -eq 0 ] || { echo "bench needs root (mounts)" >&2; exit 1; }
for tool in docker-registry skopeo umoci python3; do
  command -v "$tool" >/dev/null || { echo "bench needs $tool (scripts/setup.sh)" >&2; exit 1; }
done
# IMGFS_BIN: an imgfs binary to measure instead of building build/plain.
if [ -n "${IMGFS_BIN:-}" ]; then
  imgfs=$IMGFS_BIN
else
  scripts/build.sh plain imgfs >/dev/null
  imgfs=$repo/build/plain/tools/imgfs
fi

work=$(mktemp -d /var/tmp/imgfs-bench-wan.XXXXXX)
pids=()
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() {
  mountpoint -q "$mnt" && { IMGFS_ROOT=$work/s "$imgfs" umount "$mnt" >/dev/null 2>&1 || umount -l "$mnt"; }
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ "$keep" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
calc() { python3 -c "print(f'{$1:.2f}')"; }
. scripts/lib/registry.sh  # start_registry, free_port

if [ "$image" = host ]; then
  echo "== building the image from files of this machine (>= ${size_mb} MB, >= ${min_paths} paths, 4 layers)"
  python3 scripts/bench/host_image.py "$work/layout" "$size_mb" "$min_paths" "$work/facts.json"
else
echo "== generating the image (${size_mb} MB of file data, 2 layers)"
PYTHONPATH=$repo/scripts/bench python3 - "$work/layout" "$size_mb" "$work/facts.json" <<'PY'
import io, json, os, random, sys, tarfile
import oci_layout
out, size_mb, facts_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(20261127)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
         for _ in range(2000)]
def text(n):
    parts, total = [], 0
    while total < n:
        w = rng.choice(words)
        parts.append(w); total += len(w) + 1
    return (b" ".join(parts) + b"\n\n")[:n]
# Mixed sizes: mostly small files (configs, sources), some medium, a few large (libraries,
# models); ~75% of the bytes incompressible.
def pick_size():
    r = rng.random()
    if r < 0.70: return rng.randint(200, 16 << 10)
    if r < 0.95: return rng.randint(16 << 10, 1 << 20)
    if r < 0.995: return rng.randint(1 << 20, 8 << 20)
    return rng.randint(16 << 20, 48 << 20)
budget = size_mb << 20
files, total = [], 0
while total < budget:
    n = pick_size()
    d = f"usr/share/pkg{len(files) // 150:03d}"
    name = f"{d}/file{len(files):05d}" + (".txt" if n < (16 << 10) else ".bin")
    files.append((name, n)); total += n
split = len(files) // 5  # layer 1: a fifth of the files, layer 2: the rest
tars = []
for part in (files[:split], files[split:]):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        seen = set()
        for name, n in part:
            oci_layout.add_dirs(t, seen, name, mtime=1704067200)
            data = text(n) if (n < (16 << 10) or rng.random() < 0.25) else rng.randbytes(n)
            ti = tarfile.TarInfo(name); ti.size = n; ti.mode = 0o644; ti.mtime = 1704067200
            t.addfile(ti, io.BytesIO(data))
    tars.append(raw.getvalue())
layers = oci_layout.write_layout(out, tars, gzip_level=1)
# The small file read in (1): a text file in the middle of the big layer.
mid = files[split + (len(files) - split) // 2:]
small = next(name for name, n in mid if n < 4096)
small_size = dict(files)[small]
json.dump({"files": len(files), "file_bytes": total, "small": small, "small_size": small_size,
           "layer_bytes": sum(l["size"] for l in layers)}, open(facts_path, "w"))
print(f"{len(files)} files, {total / 1e6:.0f} MB of file data, gzip layers: "
      + ", ".join(f"{l['size'] / 1e6:.0f} MB" for l in layers))
PY
fi
fact() { python3 -c "import json;print(json.load(open('$work/facts.json'))['$1'])"; }
small=$(fact small)
small_size=$(fact small_size)
file_bytes=$(fact file_bytes)

echo "== registry, WAN proxy (${delay_ms} ms each way, ${mbit} Mbit/s), converted images"
start_registry "$work/registry" || exit 1
pids+=("$REGISTRY_PID")
reg_port=$REGISTRY_PORT
wan_port=$(free_port)
python3 scripts/wan_proxy.py "$wan_port" "127.0.0.1:$reg_port" --delay-ms "$delay_ms" \
  --mbit "$mbit" --stats "$work/wan.json" &
pids+=($!)
direct=127.0.0.1:$reg_port
wan=127.0.0.1:$wan_port
skopeo copy -q --dest-tls-verify=false "oci:$work/layout:bench" "docker://$direct/bench/gzip:1"
export IMGFS_ROOT=$work/convert-store
"$imgfs" convert -q --format estargz "oci:$work/layout:bench" "docker://$direct/bench/estargz:1" >/dev/null
"$imgfs" convert -q --format zstd:chunked "oci:$work/layout:bench" "docker://$direct/bench/zstdchunked:1" >/dev/null
for f in gzip estargz zstdchunked; do
  size=$(skopeo inspect --tls-verify=false --raw "docker://$direct/bench/$f:1" |
         python3 -c "import json,sys;print(sum(l['size'] for l in json.load(sys.stdin)['layers']))")
  echo "  $f: $((size / 1000000)) MB of layers"
done
# gzip+index: the unmodified gzip image in a second repository, with an imgfs index published
# beside it there (referrers are per repository: bench/gzip keeps having none).
skopeo copy -q --dest-tls-verify=false "oci:$work/layout:bench" "docker://$direct/bench/gzipidx:1"
"$imgfs" index push "$direct/bench/gzipidx:1" >/dev/null
rm -rf "$work/convert-store"

down() { sleep 0.4; python3 -c "import json;print(json.load(open('$work/wan.json'))['down_bytes'])"; }

# (baseline) full pull + unpack of the gzip image, then the same reads on the unpacked tree.
echo "== baseline: skopeo copy + umoci unpack (gzip image)"
b0=$(down); t0=$(now)
skopeo copy -q --src-tls-verify=false "docker://$wan/bench/gzip:1" "oci:$work/pulled:bench"
umoci unpack --image "$work/pulled:bench" "$work/bundle" >/dev/null
t1=$(now)
cat "$work/bundle/rootfs/$small" >/dev/null
t2=$(now)
(cd "$work/bundle/rootfs" && tar -cf - . | cat >/dev/null)
t3=$(now)
b1=$(down)
base_first=$(calc "$t2 - $t0")
base_tree=$(calc "($t1 - $t0) + ($t3 - $t2)")
base_bytes=$((b1 - b0))
rm -rf "$work/bundle" "$work/pulled"

declare -A first tree first_bytes tree_bytes
# Mount reference per row.
ref_of() { case $1 in gzip+index) echo "$wan/bench/gzipidx:1" ;; *) echo "$wan/bench/$1:1" ;; esac; }
rows=(estargz zstdchunked gzip+index gzip)
for f in "${rows[@]}"; do
  echo "== $f"
  # (1) + (2): mount, read one small file; the median of 5 cold mounts (one for gzip, which
  # pulls the whole image first).
  export IMGFS_ROOT=$work/s
  runs=5
  [ "$f" = gzip ] && runs=1
  times=()
  for ((i = 0; i < runs; i++)); do
    rm -rf "$work/s"
    b0=$(down); t0=$(now)
    "$imgfs" mount --prefetch none "$(ref_of "$f")" "$mnt"
    cat "$mnt/$small" >/dev/null
    t1=$(now); b1=$(down)
    times+=("$(calc "$t1 - $t0")")
    "$imgfs" umount "$mnt"
  done
  first[$f]=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p")
  first_bytes[$f]=$((b1 - b0))
  echo "  first file, each cold mount: ${times[*]} s"
  # (3): mount, read the whole tree.
  rm -rf "$work/s"
  b0=$(down); t0=$(now)
  "$imgfs" mount --prefetch none "$(ref_of "$f")" "$mnt"
  (cd "$mnt" && tar -cf - . | cat >/dev/null)
  t1=$(now); b1=$(down)
  tree[$f]=$(calc "$t1 - $t0")
  tree_bytes[$f]=$((b1 - b0))
  "$imgfs" umount "$mnt"
  echo "  first file ${first[$f]} s (${first_bytes[$f]} B), whole tree ${tree[$f]} s (${tree_bytes[$f]} B)"
done
rm -rf "$work/s"

# Time to first byte of a small many-layer image: mount (lazy, the default) + cat
# /etc/os-release, cold store, the 3-layer eStargz fixture (the layers' TOCs load in parallel).
skopeo copy -q --dest-tls-verify=false "oci:tests/fixtures/tiny-estargz:latest" \
  "docker://$direct/bench/tiny-estargz:1"
ttfb=()
for _ in 1 2 3 4 5; do
  rm -rf "$work/s"
  t0=$(now)
  "$imgfs" mount --prefetch none "$wan/bench/tiny-estargz:1" "$mnt"
  cat "$mnt/etc/os-release" >/dev/null
  t1=$(now)
  "$imgfs" umount "$mnt"
  ttfb+=("$(calc "$t1 - $t0")")
done
ttfb_median=$(printf '%s\n' "${ttfb[@]}" | sort -n | sed -n 3p)
rm -rf "$work/s"

mb() { python3 -c "print(f'{$1 / 1e6:.1f}')"; }
echo
echo "== results: ${delay_ms} ms one-way delay, ${mbit} Mbit/s; $(fact files) files, $(mb "$file_bytes") MB of file data"
echo "baseline skopeo copy + umoci unpack (gzip): ${base_first} s to the small file, ${base_tree} s pull+unpack+tar, $(mb "$base_bytes") MB fetched"
printf "%-12s %11s %9s %13s %11s %11s %9s %13s\n" format first-file vs-pull fetched/read whole-tree vs-pull+tar fetched fetched/image
for f in "${rows[@]}"; do
  printf "%-12s %10ss %9s %13s %10ss %11s %8sMB %13s\n" "$f" "${first[$f]}" \
    "$(calc "${first[$f]} / $base_first")" \
    "$(python3 -c "print(f'{${first_bytes[$f]} / $small_size:.0f}x')")" \
    "${tree[$f]}" "$(calc "${tree[$f]} / $base_tree")" "$(mb "${tree_bytes[$f]}")" \
    "$(calc "${tree_bytes[$f]} / max(1, $base_bytes)")"
done
echo "first-file: imgfs mount + cat of one ${small_size}-byte file (median of 5 cold mounts; gzip: one); vs-pull: that time / skopeo copy + umoci unpack"
echo "fetched/read: bytes through the link for that / bytes of the file (TOCs included)"
echo "whole-tree: imgfs mount + tar of every file; vs-pull+tar: / (pull + unpack + tar of the unpacked tree)"
echo "gzip+index: the gzip image read lazily through its published imgfs index (imgfs index push)"
echo "gzip: no index anywhere, so the mount pulls and indexes the layers first"
echo "mount + cat /etc/os-release, cold, eStargz, 3 layers, WAN link: ${ttfb_median} s (median of 5: ${ttfb[*]})"
