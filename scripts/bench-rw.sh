#!/usr/bin/env bash
# Write-heavy benchmark of writable mounts (run through `scripts/bench.sh --rw`). Measured,
# never asserted; not part of CI. Loopback only: no network at all.
#
#   scripts/bench-rw.sh KEEP(0|1)
#
# The image: generated, deterministic, 2 layers (gzip): a 256 MiB file of incompressible
# data (opt/big.bin) and a tree of small files (usr/share/tree, spread over both layers).
# Four setups over the same image, every upper on the same disk (the one holding /var/tmp):
#   overlayfs       the kernel's overlay: lowerdir = the layers extracted with tar, upperdir
#                   and workdir fresh for each run
#   fuse-overlayfs  the same lower, upper and work dirs through fuse-overlayfs
#   imgfs-overlay   `imgfs mount --rw --driver overlay --upper DIR` from a warm store (layer
#                   indexes built once): the kernel's overlayfs over a read-only imgfs mount
#   imgfs-fuse      `imgfs mount --rw --driver fuse --upper DIR`: imgfs's own copy-on-write
#                   FUSE filesystem
# Workloads, each on a fresh mount with an empty upper (the mount is not timed):
#   untar       tar -xf of a generated source tree (default 20000 files, ~200 MB: mostly
#               small files, a few larger ones) into a new directory of the mount
#   dd-1GiB     dd if=/dev/zero bs=1M count=1024 conv=fsync into a new file
#   copy-up     append one byte to opt/big.bin (256 MiB, from the image): a full copy-up
#   rm-rf       rm -rf usr/share/tree (a lower tree: whiteouts / opaque dirs in the upper)
# Each time includes `sync -f` of the disk holding the uppers, so data written back to disk
# counts for every setup. Page cache: warm for inputs (the source tarball and each setup's
# lower data are read once before the timed runs; caches are not dropped). Median of
# IMGFS_BENCH_RUNS runs (default 3). Peak RSS of the FUSE daemons (imgfs, fuse-overlayfs)
# from /usr/bin/time -v, the maximum over the runs of each workload.
#
# Environment: IMGFS_BIN (the imgfs binary; default: build/plain, built first),
# IMGFS_BENCH_RUNS (3), IMGFS_BENCH_RW_FILES (20000), IMGFS_BENCH_RW_TREE_MB (200),
# IMGFS_BENCH_RW_DD_MB (1024), IMGFS_BENCH_RW_SETUPS ("ovl fovl imgfs-overlay imgfs-fuse"; ovl
# is always run, the ratios' base), IMGFS_BENCH_RW_WORKLOADS ("untar dd-1GiB copy-up rm-rf").
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
keep=${1:-0}
runs=${IMGFS_BENCH_RUNS:-3}
src_files=${IMGFS_BENCH_RW_FILES:-20000}
src_mb=${IMGFS_BENCH_RW_TREE_MB:-200}
dd_mb=${IMGFS_BENCH_RW_DD_MB:-1024}

[ "$(id -u)" -eq 0 ] || { echo "bench needs root (mounts)" >&2; exit 1; }
for tool in fuse-overlayfs python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench needs $tool (scripts/setup.sh)" >&2; exit 1; }
done
if [ -n "${IMGFS_BIN:-}" ]; then
  imgfs=$IMGFS_BIN
else
  scripts/build.sh plain imgfs >/dev/null
  imgfs=$repo/build/plain/tools/imgfs
fi

work=$(mktemp -d /var/tmp/imgfs-bench-rw.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt"
daemon_pid=""
cleanup() {
  if mountpoint -q "$mnt"; then
    "$imgfs" umount "$mnt" >/dev/null 2>&1 || umount -l "$mnt" 2>/dev/null || true
  fi
  [ -n "$daemon_pid" ] && { kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; }
  [ "$keep" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
export IMGFS_ROOT=$work/store

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== generating the image (256 MiB lower file + a tree of small files, 2 layers) and a source tree (${src_files} files, ~${src_mb} MB)"
PYTHONPATH=$repo/scripts/bench python3 - "$work/layout" "$work/src.tar" "$src_files" "$src_mb" <<'PY'
import io, os, random, sys, tarfile
import oci_layout
out, src_tar, nfiles, src_mb = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(20261127)

def add_file(t, seen, path, data, mode=0o644):
    oci_layout.add_dirs(t, seen, path, mtime=1700000000)
    ti = tarfile.TarInfo(path); ti.size = len(data); ti.mode = mode; ti.mtime = 1700000000
    t.addfile(ti, io.BytesIO(data))

# The source tree: many small files (70% < 8 KiB), some medium, a few large; ~src_mb MB.
avg = (src_mb << 20) // nfiles
with tarfile.open(src_tar, "w", format=tarfile.PAX_FORMAT) as t:
    seen = set()
    sizes = []
    for i in range(nfiles):
        r = rng.random()
        if r < 0.70: n = rng.randint(100, 8 << 10)
        elif r < 0.97: n = rng.randint(8 << 10, 64 << 10)
        else: n = rng.randint(64 << 10, 2 << 20)
        sizes.append(n)
    scale = (src_mb << 20) / max(sum(sizes), 1)
    for i, n in enumerate(sizes):
        n = max(1, int(n * scale))
        add_file(t, seen, f"src/mod{i // 400:03d}/sub{(i // 40) % 10}/f{i:05d}.c", rng.randbytes(n))

tars = []
for li in range(2):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        seen = set()
        if li == 0:
            add_file(t, seen, "opt/big.bin", b"".join(rng.randbytes(1 << 20) for _ in range(256)))
            add_file(t, seen, "bin/sh", b"#!/bin/true\n", 0o755)
        # usr/share/tree: 4000 small files per layer, the same directories in both layers.
        for i in range(4000):
            add_file(t, seen, f"usr/share/tree/d{i % 40:02d}/l{li}-{i:04d}.txt",
                     rng.randbytes(rng.randint(100, 4096)))
    tars.append(raw.getvalue())
layers = oci_layout.write_layout(out, tars, gzip_level=1)
print(f"source tree: {nfiles} files, {os.path.getsize(src_tar) / 1e6:.0f} MB tar; "
      f"image layers (gzip): " + ", ".join(f"{l['size'] / 1e6:.0f} MB" for l in layers))
PY

echo "== preparing the lower dirs and the imgfs store"
mkdir -p "$work/lower"
lowers=()
i=0
for layer in $(python3 scripts/bench/oci_layout.py layers "$work/layout"); do
  mkdir -p "$work/lower/$i"
  tar -xzf "$work/layout/blobs/sha256/$layer" -C "$work/lower/$i"
  lowers=("$work/lower/$i" "${lowers[@]}")
  i=$((i + 1))
done
lowerdir=$(IFS=:; echo "${lowers[*]}")
"$imgfs" pull "oci:$work/layout:bench" >/dev/null
cat "$work/src.tar" >/dev/null

# mount_setup SETUP: a fresh upper ($work/run/upper, work dir beside it) mounted on $mnt.
# FUSE daemons serve in the foreground under /usr/bin/time -v ($work/daemon.time).
# Uppers are not deleted between runs, only moved aside (emptied of their large files) and
# deleted at the end: the disk here is ext4 without a journal, whose inode allocator skips
# inodes freed in the last 60-300 s by reading each one's inode table entry
# (recently_deleted), so after the rm -rf of a 20 000-file upper the next untar took 14 s of
# system time instead of 1 s, whichever setup it ran on.
run_count=0
mount_setup() {
  if [ -d "$work/run" ]; then
    find "$work/run" -xdev -type f -size +1M -delete
    run_count=$((run_count + 1))
    mv "$work/run" "$work/done/$run_count"
  fi
  mkdir -p "$work/done" "$work/run/upper" "$work/run/work"
  rm -f "$work/daemon.time"
  case "$1" in
    ovl)
      mount -t overlay overlay \
        -o "lowerdir=$lowerdir,upperdir=$work/run/upper,workdir=$work/run/work" "$mnt" ;;
    fovl)
      /usr/bin/time -v -o "$work/daemon.time" fuse-overlayfs -f \
        -o "lowerdir=$lowerdir,upperdir=$work/run/upper,workdir=$work/run/work" "$mnt" \
        >/dev/null 2>&1 &
      daemon_pid=$! ;;
    imgfs-overlay | imgfs-fuse)
      rmdir "$work/run/work"  # imgfs makes its own work dir beside the upper
      # -f: the foreground process outlives the mount; its daemons' peak RSS reaches time(1)
      /usr/bin/time -v -o "$work/daemon.time" "$imgfs" mount -f --rw --driver "${1#imgfs-}" \
        --upper "$work/run/upper" "oci:$work/layout:bench" "$mnt" >/dev/null \
        2>"$work/daemon.log" &
      daemon_pid=$! ;;
  esac
  for _ in $(seq 400); do mountpoint -q "$mnt" && return 0; sleep 0.05; done
  echo "mounting $1 failed" >&2
  [ -f "$work/daemon.log" ] && cat "$work/daemon.log" >&2
  return 1
}
# umount_setup SETUP: sets last_rss to the daemon's peak RSS in KiB (0 for the kernel's overlayfs).
umount_setup() {
  case "$1" in
    ovl) umount "$mnt" ;;
    fovl) umount "$mnt" ;;
    imgfs-*) "$imgfs" umount "$mnt" >/dev/null ;;
  esac
  if [ -n "$daemon_pid" ]; then
    wait "$daemon_pid" || true
    daemon_pid=""
    last_rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$work/daemon.time")
  else
    last_rss=0
  fi
}

run_workload() {  # name
  case "$1" in
    untar) mkdir "$mnt/untar" && tar -xf "$work/src.tar" -C "$mnt/untar" ;;
    dd-1GiB) dd if=/dev/zero of="$mnt/big.out" bs=1M count="$dd_mb" conv=fsync status=none ;;
    copy-up) printf x >>"$mnt/opt/big.bin" ;;
    rm-rf) rm -rf "$mnt/usr/share/tree" ;;
  esac
  sync -f "$work"
}
check_workload() {  # name: the result is what the workload says it is
  case "$1" in
    untar) [ "$(find "$mnt/untar" -type f | wc -l)" -eq "$src_files" ] ;;
    dd-1GiB) [ "$(stat -c %s "$mnt/big.out")" -eq $((dd_mb << 20)) ] ;;
    copy-up) [ "$(stat -c %s "$mnt/opt/big.bin")" -eq $(((256 << 20) + 1)) ] ;;
    rm-rf) [ ! -e "$mnt/usr/share/tree" ] && [ -e "$mnt/usr/share" ] ;;
  esac
}

read -r -a setups <<<"${IMGFS_BENCH_RW_SETUPS:-ovl fovl imgfs-overlay imgfs-fuse}"
[[ " ${setups[*]} " == *" ovl "* ]] || setups=(ovl "${setups[@]}")
# Warm each setup's lower data once (the imgfs store's layers, the extracted lower dirs).
for setup in "${setups[@]}"; do
  mount_setup "$setup"
  cat "$mnt/opt/big.bin" >/dev/null
  (cd "$mnt" && tar -cf - usr | cat >/dev/null)
  umount_setup "$setup"
done

declare -A results rss
read -r -a workloads <<<"${IMGFS_BENCH_RW_WORKLOADS:-untar dd-1GiB copy-up rm-rf}"
for w in "${workloads[@]}"; do
  for setup in "${setups[@]}"; do
    times=()
    peak=0
    for _ in $(seq "$runs"); do
      mount_setup "$setup"
      sync -f "$work"
      t0=$(now); run_workload "$w"; t1=$(now)
      times+=("$(elapsed "$t0" "$t1")")
      check_workload "$w" || { echo "$w on $setup: wrong result" >&2; exit 1; }
      umount_setup "$setup"
      [ "$last_rss" -gt "$peak" ] && peak=$last_rss
    done
    results[$w,$setup]=$(printf '%s\n' "${times[@]}" | median)
    rss[$w,$setup]=$peak
    echo "  $w $setup: ${times[*]}"
  done
done

ratio() { python3 -c "print(f'{$1/max($2,1e-6):.2f}')"; }
echo
echo "== results (seconds, median of $runs; ratio = setup / overlayfs; lower is better)"
printf "%-10s %10s %10s %13s %10s %9s %9s %9s %9s %9s %9s\n" workload overlayfs fuse-ovlfs \
  imgfs-overlay imgfs-fuse fovl/ovl i-ovl/ovl i-fuse/ovl "fovl MiB" "i-ovl MiB" "i-fuse MiB"
for w in "${workloads[@]}"; do
  o=${results[$w,ovl]}; f=${results[$w,fovl]:-0}; io=${results[$w,imgfs-overlay]:-0}
  ifu=${results[$w,imgfs-fuse]:-0}
  printf "%-10s %10s %10s %13s %10s %9s %9s %9s %9s %9s %9s\n" "$w" "$o" "$f" "$io" "$ifu" \
    "$(ratio "$f" "$o")" "$(ratio "$io" "$o")" "$(ratio "$ifu" "$o")" \
    "$((${rss[$w,fovl]:-0} / 1024))" "$((${rss[$w,imgfs-overlay]:-0} / 1024))" \
    "$((${rss[$w,imgfs-fuse]:-0} / 1024))"
done
echo "RSS: peak of the FUSE daemons (imgfs-overlay: its read-only daemon)"
echo "untar: ${src_files} files, $(($(stat -c %s "$work/src.tar") >> 20)) MiB tar; dd: ${dd_mb} MiB; copy-up: 256 MiB + 1 byte; rm-rf: 8000 files in 2 layers"
