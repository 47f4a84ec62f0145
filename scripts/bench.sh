#!/usr/bin/env bash
# Benchmarks imgfs side by side with its peers on one image, in one run, and prints each time
# and its ratio to the kernel's overlayfs. Measured, never asserted.
#
#   scripts/bench.sh [--size-mb N] [--keep]
#   scripts/bench.sh --wan [--generated] [--size-mb N] [--min-paths N] [--keep]
#                                                     (lazy loading over an emulated WAN)
#   scripts/bench.sh --rw [--keep]                    (write-heavy workloads on writable mounts)
#   scripts/bench.sh --memory [ARGS...]               (daemon memory and mount time, many files)
#
# --memory: scripts/bench-memory.sh ARGS (see the comment at its top): a 2-layer image of
# /usr/share and /usr/include (~75 000 paths), the time of a mount with its layer indexes
# stored, and the daemon's VmRSS / VmHWM after the mount and after a tar of the tree.
#
# --rw: scripts/bench-rw.sh (see the comment at its top): untar of a source tree, a 1 GiB
# sequential write, copy-up of a 256 MiB lower file and rm -rf of a lower tree on the kernel's
# overlayfs, fuse-overlayfs and `imgfs mount --rw --upper` on both drivers (overlay, fuse);
# times, ratios and daemon peak RSS.
# Not part of the default run (it takes several minutes on its own).
#
# --wan: lazy mounts against a registry behind scripts/wan_proxy.py (20 ms one-way delay in
# each direction, 200 Mbit/s shared by all connections; loopback only). The image: the one
# below, from files of this machine (4 layers, compressing ~3:1 as a distribution image does),
# or with --generated a deterministic 2-layer image of many files of mixed sizes, mostly
# incompressible (default 700 MB of file data, > 500 MB compressed); pushed as plain gzip and
# converted by `imgfs convert`
# to eStargz and zstd:chunked. For each format it prints (1) `imgfs mount` (lazy) + reading
# one small file vs `skopeo copy` + `umoci unpack` of the gzip image, (2) bytes fetched vs
# bytes read, (3) mount + reading the whole tree (tar) vs pull + unpack + the same tar over
# the unpacked tree, and the ratios. Plain gzip has no lazy format: `imgfs mount` then pulls
# the layers whole and indexes them (pull + index). Last, the time to first byte of a small
# many-layer image: mount + cat /etc/os-release, cold, eStargz (3 layers), WAN link.
#
# The image: a multi-layer OCI image the script builds from files of this machine
# (/usr/share, /usr/include, /usr/lib, ...): 4 layers, gzip, by default at least 1 200 MB of
# file data and 50 000 paths (--size-mb N, --min-paths N). Peers over the same layers:
#   overlayfs       the kernel's overlay, lowerdir = each layer extracted with tar
#   fuse-overlayfs  the same lower dirs through fuse-overlayfs
#   imgfs           `imgfs mount` from a warm store (layer indexes built once: "cold index"
#                   mount time is reported separately)
# Workloads, page cache warm (each run once to warm, then the median of 5 timed runs):
# find -type f | wc -l, du -s, ls -lR >/dev/null, tar -cf - . | cat >/dev/null (reads every
# file); and cold (the page cache dropped before each of 3 timed runs; imgfs's store stays on
# disk): ls -lR and tar. Daemon peak RSS from
# /usr/bin/time -v; the FUSE requests (by kind) one more warm tar sends imgfs, from
# `imgfs stats`. Loopback only: no network at all.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
size_mb=1200
min_paths=50000
keep=0
wan=0
wan_image=host
rw=0
size_set=0
if [ "${1:-}" = --memory ]; then
  shift
  exec scripts/bench-memory.sh "$@"
fi
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) size_mb=$2; size_set=1; shift 2 ;;
    --min-paths) min_paths=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --wan) wan=1; shift ;;
    --generated) wan_image=generated; shift ;;
    --rw) rw=1; shift ;;
    *) echo "usage: $0 [--wan [--generated]|--rw] [--size-mb N] [--min-paths N] [--keep] | --memory [ARGS]" >&2; exit 2 ;;
  esac
done
if [ "$wan" = 1 ]; then
  [ "$size_set" = 1 ] || [ "$wan_image" = host ] || size_mb=700
  exec scripts/bench-wan.sh "$size_mb" "$keep" "$wan_image" "$min_paths"
fi
if [ "$rw" = 1 ]; then
  exec scripts/bench-rw.sh "$keep"
fi

scripts/setup.sh >/dev/null
scripts/build.sh plain imgfs imgfs_inflate_bench >/dev/null
imgfs=$repo/build/plain/tools/imgfs
[ "$(id -u)" -eq 0 ] || { echo "bench.sh needs root (mounts)" >&2; exit 1; }

# eStargz chunks and TOCs are decoded with libdeflate (fs/layer/gunzip.h), gzip layers from
# their checkpoints with ISA-L (fs/layer/gzip_index.h); zlib, ISA-L and libdeflate on the same
# data in the same run, for the ratios.
echo "== inflate"
"$repo/build/plain/tests/imgfs_inflate_bench" /usr/bin/* 2>/dev/null | tail -1

work=$(mktemp -d /var/tmp/imgfs-bench.XXXXXX)
mounts=()
cleanup() {
  for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done
  [ "$keep" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
export IMGFS_ROOT=$work/store

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
runs=${IMGFS_BENCH_RUNS:-5}
timeit() {  # prints the median seconds of $runs runs of "$@" ($cold=1: page cache dropped first)
  local t0 t1 times=()
  for _ in $(seq "$runs"); do
    if [ "${cold:-0}" = 1 ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
    t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
    times+=("$(elapsed "$t0" "$t1")")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

echo "== building the benchmark image (>= ${size_mb} MB of files, >= $min_paths paths, 4 layers)"
python3 scripts/bench/host_image.py "$work/layout" "$size_mb" "$min_paths"

echo "== preparing peers"
mkdir -p "$work/lower" "$work/mnt-ovl" "$work/mnt-fovl" "$work/mnt-imgfs" "$work/upper" "$work/work"
lowers=()
i=0
for layer in $(python3 scripts/bench/oci_layout.py layers "$work/layout"); do
  mkdir -p "$work/lower/$i"
  tar -xzf "$work/layout/blobs/sha256/$layer" -C "$work/lower/$i"
  lowers=("$work/lower/$i" "${lowers[@]}")
  i=$((i + 1))
done
lowerdir=$(IFS=:; echo "${lowers[*]}")
mount -t overlay overlay -o "ro,lowerdir=$lowerdir" "$work/mnt-ovl"; mounts+=("$work/mnt-ovl")
fuse-overlayfs -o "lowerdir=$lowerdir" "$work/mnt-fovl"; mounts+=("$work/mnt-fovl")

"$imgfs" pull "oci:$work/layout:bench" >/dev/null
t0=$(now); "$imgfs" mount "oci:$work/layout:bench" "$work/mnt-imgfs"; t1=$(now)
mount_cold=$(elapsed "$t0" "$t1")
"$imgfs" umount "$work/mnt-imgfs"
t0=$(now); "$imgfs" mount "oci:$work/layout:bench" "$work/mnt-imgfs"; t1=$(now)
mount_warm=$(elapsed "$t0" "$t1")
"$imgfs" umount "$work/mnt-imgfs"
# Serve in the foreground under /usr/bin/time for the daemon's peak RSS.
/usr/bin/time -v -o "$work/imgfs.time" "$imgfs" mount -f "oci:$work/layout:bench" "$work/mnt-imgfs" &
for _ in $(seq 200); do mountpoint -q "$work/mnt-imgfs" && break; sleep 0.05; done
mounts+=("$work/mnt-imgfs")

declare -A results
workloads=("find" "du" "ls-lR" "tar" "ls-lR-cold" "tar-cold")
run_workload() {  # name dir
  case "${1%-cold}" in
    find) (cd "$2" && find . -type f | wc -l) ;;
    du) (cd "$2" && du -s .) ;;
    ls-lR) (cd "$2" && ls -lR . >/dev/null) ;;
    # GNU tar skips reading file data when the archive is /dev/null: pipe it instead.
    tar) (cd "$2" && tar -cf - . | cat >/dev/null) ;;
  esac
}
for w in "${workloads[@]}"; do
  for peer in ovl fovl imgfs; do
    if [ "${w%-cold}" != "$w" ]; then
      results[$w,$peer]=$(cold=1 runs=3 timeit run_workload "$w" "$work/mnt-$peer")
    else
      run_workload "$w" "$work/mnt-$peer" >/dev/null 2>&1 || true  # warm
      results[$w,$peer]=$(timeit run_workload "$w" "$work/mnt-$peer")
    fi
  done
done
# The FUSE requests of one more warm tar (imgfs stats: requests by kind since the mount).
warm_tar_requests="(imgfs stats unavailable)"
if before=$("$imgfs" stats "$work/mnt-imgfs" --format json 2>/dev/null); then
  run_workload tar "$work/mnt-imgfs" >/dev/null 2>&1 || true
  if after=$("$imgfs" stats "$work/mnt-imgfs" --format json 2>/dev/null); then
    warm_tar_requests=$(python3 - "$before" "$after" <<'PY'
import json, sys
b, a = (json.loads(x).get("fuse", {}) for x in sys.argv[1:3])
rb, ra = b.get("requests", {}), a.get("requests", {})
d = {k: ra.get(k, 0) - rb.get(k, 0) for k in sorted(set(ra) | set(rb))}
parts = [f"{k} {v}" for k, v in d.items() if v] or ["none"]
for k in ("open", "release", "opendir", "releasedir"):
    if not d.get(k):
        parts.append(f"{k} 0")
print(", ".join(parts) + f" (no_open {a.get('no_open')}, no_opendir {a.get('no_opendir')},"
      f" largest read {a.get('largest_read_bytes', 0) // 1024} KiB)")
PY
)
  fi
fi
files_ovl=$(cd "$work/mnt-ovl" && find . | wc -l)
files_imgfs=$(cd "$work/mnt-imgfs" && find . | wc -l)

"$imgfs" umount "$work/mnt-imgfs"
wait || true
rss_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$work/imgfs.time")

echo
echo "== results (seconds; ratio = peer / overlayfs; lower is better)"
printf "%-26s %10s %10s %10s %8s %8s\n" workload overlayfs fuse-ovlfs imgfs fovl/ovl imgfs/ovl
for w in "${workloads[@]}"; do
  o=${results[$w,ovl]}; f=${results[$w,fovl]}; m=${results[$w,imgfs]}
  printf "%-26s %10s %10s %10s %8s %8s\n" "$w" "$o" "$f" "$m" \
    "$(python3 -c "print(f'{$f/max($o,1e-6):.2f}')")" "$(python3 -c "print(f'{$m/max($o,1e-6):.2f}')")"
done
echo "imgfs mount, cold index:   ${mount_cold}s (indexes built from the stored layers)"
echo "imgfs mount, warm index:   ${mount_warm}s"
echo "paths seen: overlayfs $files_ovl, imgfs $files_imgfs"
echo "imgfs daemon peak RSS:     $((rss_kb / 1024)) MiB"
echo "FUSE requests, 1 warm tar: $warm_tar_requests"
echo; echo "== stall a reader sees per takeover (scripts/bench-takeover.sh)"; scripts/bench-takeover.sh
