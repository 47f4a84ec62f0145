#!/usr/bin/env bash
# The daemon's memory and the mount time of a many-file image (run through
# `scripts/bench.sh --memory`, or directly). Measured, never asserted; not part of CI.
# Loopback only: no network at all.
#
#   scripts/bench-memory.sh [--max-file-kb N] [--work DIR] [--runs N]
#
# The image: a 2-layer gzip OCI layout built from this machine's files: /usr/share (bottom
# layer) and /usr/include (top), ~75 000 paths on a Debian machine with the build tools
# installed. --max-file-kb N keeps only the first N KiB of each file: the same paths, entries
# and chunks, far fewer bytes, a faster build (the checkpoints and the read caches scale with
# the bytes, so the default is whole files, ~1 GB).
# It is pulled into a fresh store (IMGFS_ROOT under the work directory) and mounted:
#   - once with the layer indexes not yet in the store (built from the blobs): timed;
#   - --runs times (default 5) with the indexes stored: the median time of `imgfs mount`
#     until it returns (the mount is up);
#   - once more, for the serving daemon's VmRSS and VmHWM (from /proc) right after the mount
#     and after `tar -cf - . | cat >/dev/null` of the whole tree (GNU tar skips reading
#     file data when its archive is /dev/null, hence the pipe);
#   - converted to eStargz and zstd:chunked (`imgfs convert`) into a loopback docker-registry
#     and mounted lazily --runs times from a store that holds their TOC indexes and merged
#     tree: the median time of `imgfs mount` (skipped without /usr/bin/docker-registry).
# --work DIR keeps the layout and the store in DIR (made if missing) and reuses the layout
# on the next run with the same DIR; without it a temporary directory is removed at exit.
#
# Environment: IMGFS_BIN (the imgfs binary; default: build/plain, built first).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
max_file_kb=0
work=""
runs=5
while [ $# -gt 0 ]; do
  case "$1" in
    --max-file-kb) max_file_kb=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: $0 [--max-file-kb N] [--work DIR] [--runs N]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench-memory.sh needs root (mounts)" >&2; exit 1; }
if [ -n "${IMGFS_BIN:-}" ]; then
  imgfs=$IMGFS_BIN
else
  scripts/build.sh plain imgfs >/dev/null
  imgfs=$repo/build/plain/tools/imgfs
fi

keep=1
if [ -z "$work" ]; then
  work=$(mktemp -d /var/tmp/imgfs-bench-memory.XXXXXX)
  keep=0
fi
mkdir -p "$work"
work=$(cd "$work" && pwd)
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() {
  if mountpoint -q "$mnt"; then
    "$imgfs" umount "$mnt" >/dev/null 2>&1 || umount -l "$mnt" 2>/dev/null || true
  fi
  [ "$keep" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
export IMGFS_ROOT=$work/store

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

layout=$work/layout-$max_file_kb
if [ ! -f "$layout/index.json" ]; then
  echo "== building the image (/usr/share, /usr/include; files cut at ${max_file_kb} KiB, 0 = whole)"
  rm -rf "$layout"
  PYTHONPATH=$repo/scripts/bench python3 - "$layout" "$max_file_kb" <<'PY'
import io, os, sys, tarfile
import oci_layout
out, max_kb = sys.argv[1], int(sys.argv[2])
tars, paths, data = [], 0, 0
for src in ["/usr/share", "/usr/include"]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        seen = set()
        for d, dirs, names in os.walk(src):
            dirs.sort()
            oci_layout.add_dirs(t, seen, d + "/x")
            for n in sorted(names) + sorted(x for x in dirs if os.path.islink(os.path.join(d, x))):
                p = os.path.join(d, n)
                try:
                    ti = t.gettarinfo(p, arcname=p.strip("/"))
                except OSError:
                    continue
                if ti is None:
                    continue
                if ti.isreg():
                    try:
                        with open(p, "rb") as f:
                            body = f.read(max_kb << 10) if max_kb > 0 else f.read()
                    except OSError:
                        continue
                    ti.size = len(body)
                    t.addfile(ti, io.BytesIO(body))
                    data += len(body)
                elif ti.issym() or ti.isdir():
                    t.addfile(ti)
                else:
                    continue
                paths += 1
        paths += len(seen)
    tars.append(raw.getvalue())
layers = oci_layout.write_layout(out, tars, gzip_level=1)
print(f"{paths} paths, {data / 1e6:.0f} MB of file data, layers (gzip): "
      + ", ".join(f"{l['size'] / 1e6:.0f} MB" for l in layers))
PY
fi
rm -rf "$IMGFS_ROOT"
"$imgfs" pull "oci:$layout:bench" >/dev/null

# The pid of the daemon serving $mnt: the child of its keeper, the process whose command line
# names $mnt and whose parent's does not (the first daemon, forked, has the keeper's).
daemon_of() {
  local pid ppid child
  for pid in $(pgrep -f -- " $mnt"); do
    ppid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null) || continue
    if ! tr '\0' ' ' <"/proc/$ppid/cmdline" 2>/dev/null | grep -qF -- " $mnt"; then
      child=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null) || continue
      [ -n "$child" ] || continue
      echo "${child%% *}"
      return
    fi
  done
  echo "no daemon found for $mnt" >&2
  return 1
}
mem() {  # "VmRSS X MiB, VmHWM Y MiB" of pid $1
  awk '/^VmRSS|^VmHWM/ {v[$1]=$2} END {printf "VmRSS %.1f MiB, VmHWM %.1f MiB", v["VmRSS:"]/1024, v["VmHWM:"]/1024}' \
    "/proc/$1/status"
}

echo "== mounts"
t0=$(now); "$imgfs" mount "oci:$layout:bench" "$mnt"; t1=$(now)
echo "mount, indexes built:         $(elapsed "$t0" "$t1") s"
"$imgfs" umount "$mnt"
# The store was just written (blobs, indexes): its write-back would otherwise run during the
# timed mounts, and they would measure the disk.
sync
times=()
for _ in $(seq "$runs"); do
  t0=$(now); "$imgfs" mount "oci:$layout:bench" "$mnt"; t1=$(now)
  times+=("$(elapsed "$t0" "$t1")")
  "$imgfs" umount "$mnt"
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "mount, indexes stored:        $median s (median of $runs: ${times[*]})"

"$imgfs" mount "oci:$layout:bench" "$mnt"
pid=$(daemon_of)
echo "daemon after mount:           $(mem "$pid")"
echo "paths in the mount:           $(cd "$mnt" && find . | wc -l)"
(cd "$mnt" && tar -cf - . | cat >/dev/null)
echo "daemon after tar of the tree: $(mem "$pid")"
# The goals this image is held to: a daemon of at most 64 MiB whatever is read (its peak, VmHWM,
# covers the mount too) and a mount from stored indexes in at most 50 ms.
hwm=$(awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
verdict() { python3 -c "print('met' if $1 <= $2 else 'not met')"; }
echo "goal, peak RSS <= 64 MiB:     $hwm MiB ($(verdict "$hwm" 64))"
echo "goal, mount <= 0.050 s:       $median s ($(verdict "$median" 0.050))"
"$imgfs" umount "$mnt"

# The same image converted to eStargz and zstd:chunked, in a loopback registry, mounted lazily
# (the default): the first mount fetches the TOCs and stores their indexes and the merged tree;
# the timed ones mount from them (no request to the registry until a file is read).
if [ -x /usr/bin/docker-registry ]; then
  echo "== lazy mounts (eStargz, zstd:chunked in a loopback registry)"
  . scripts/lib/registry.sh
  start_registry "$work/registry" || exit 1
  registry_pid=$REGISTRY_PID
  trap 'kill "$registry_pid" 2>/dev/null; cleanup' EXIT
  reg=127.0.0.1:$REGISTRY_PORT
  for format in estargz zstd:chunked; do
    repo=bench/${format/:/-}
    IMGFS_ROOT=$work/convert-store "$imgfs" convert -q --format "$format" "oci:$layout:bench" \
      "docker://$reg/$repo:1" >/dev/null
    rm -rf "$work/convert-store" "$work/lazy-store"
    t0=$(now); IMGFS_ROOT=$work/lazy-store "$imgfs" mount "$reg/$repo:1" "$mnt"; t1=$(now)
    IMGFS_ROOT=$work/lazy-store "$imgfs" umount "$mnt"
    sync
    times=()
    for _ in $(seq "$runs"); do
      t0=$(now); IMGFS_ROOT=$work/lazy-store "$imgfs" mount "$reg/$repo:1" "$mnt"; t1=$(now)
      times+=("$(elapsed "$t0" "$t1")")
      IMGFS_ROOT=$work/lazy-store "$imgfs" umount "$mnt"
    done
    lazy=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '%-30s%s s (median of %s: %s)\n' "lazy, $format, stored:" "$lazy" "$runs" "${times[*]}"
    echo "goal, mount <= 0.050 s:       $lazy s ($(verdict "$lazy" 0.050))"
  done
  rm -rf "$work/lazy-store" "$work/registry"
fi
