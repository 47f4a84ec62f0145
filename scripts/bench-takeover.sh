#!/usr/bin/env bash
# The stall a reader sees when a read-only mount's daemon is replaced (fs/fuse/takeover.h):
# killed (SIGKILL: the keeper starts a new daemon) or upgraded (`imgfs mount --restart`).
# Measured, never asserted.
#
#   scripts/bench-takeover.sh [--kills N] [--restarts N]     (defaults: 20 and 5)
#
# Mounts the fixture image tiny-gzip (tests/fixtures; a local image, store warm) and runs one
# reader thread: 4 KiB preads at random offsets of a 1 MiB file, each after dropping the file's
# cached pages, so that every call is a FUSE READ answered by the daemon. The main thread
# kills or restarts the daemon at random moments (0.2-0.6 s after the previous daemon serves).
# The stall of one takeover is the longest read call in progress between that event and the
# next one; without a takeover a call takes tens of microseconds. Prints median and max of
# the stalls per kind of takeover, and the reader's failed calls (expected 0).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
kills=20
restarts=5
while [ $# -gt 0 ]; do
  case "$1" in
    --kills) kills=$2; shift 2 ;;
    --restarts) restarts=$2; shift 2 ;;
    *) echo "usage: $0 [--kills N] [--restarts N]" >&2; exit 2 ;;
  esac
done
imgfs=$repo/build/plain/tools/imgfs
[ -x "$imgfs" ] || { echo "build imgfs first: scripts/build.sh plain imgfs" >&2; exit 1; }
work=$(mktemp -d /tmp/imgfs-bench-takeover.XXXXXX)
export IMGFS_ROOT=$work/store
mkdir -p "$work/mnt"
cleanup() {
  "$imgfs" umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$imgfs" mount "oci:$repo/tests/fixtures/tiny-gzip:latest" "$work/mnt"

python3 - "$imgfs" "$work/mnt" "$IMGFS_ROOT" "$kills" "$restarts" <<'PY'
import glob, json, os, random, signal, statistics, subprocess, sys, threading, time

imgfs, mnt, root, kills, restarts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def keeper_pid():
    for path in glob.glob(os.path.join(root, "mounts", "*.json")):
        with open(path) as f:
            lease = json.load(f)
        if lease.get("mountpoint") == os.path.realpath(mnt):
            return lease["pid"]
    raise SystemExit("no lease for " + mnt)

def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]

def serving(keeper, not_pid):
    # A new daemon serves once it answers a lookup nobody cached (a fresh missing name).
    while True:
        kids = children(keeper)
        if len(kids) == 1 and kids[0] != not_pid:
            try:
                os.stat(os.path.join(mnt, "etc", f"missing-{time.monotonic_ns()}"))
            except FileNotFoundError:
                return kids[0]
        time.sleep(0.01)

calls = []  # (start, end) of every read call, monotonic seconds
failures = []
stop = False

def reader():
    fd = os.open(os.path.join(mnt, "data", "random.bin"), os.O_RDONLY)
    size = os.fstat(fd).st_size
    rng = random.Random(1)
    while not stop:
        off = rng.randrange(0, max(size - 4096, 1)) & ~4095
        t0 = time.monotonic()
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.pread(fd, 4096, off)
        except OSError as e:
            failures.append(str(e))
        calls.append((t0, time.monotonic()))
    os.close(fd)

keeper = keeper_pid()
daemon = serving(keeper, 0)
thread = threading.Thread(target=reader)
thread.start()
events = []  # (time, kind)
plan = ["kill"] * kills + ["restart"] * restarts
random.Random(2).shuffle(plan)
for kind in plan:
    time.sleep(random.uniform(0.2, 0.6))
    events.append((time.monotonic(), kind))
    if kind == "kill":
        os.kill(daemon, signal.SIGKILL)
    else:
        subprocess.run([imgfs, "mount", "--restart", mnt], check=True)
    daemon = serving(keeper, daemon)
time.sleep(0.5)
stop = True
thread.join()

stalls = {"kill": [], "restart": []}
ends = [t for t, _ in events[1:]] + [calls[-1][1]]
for (t, kind), end in zip(events, ends):
    # Calls in progress at some moment of [t, end): the longest is the stall.
    longest = max((e - s for s, e in calls if e >= t and s < end), default=0.0)
    stalls[kind].append(longest)
baseline = statistics.median(e - s for s, e in calls)
print(f"read calls: {len(calls)}, failed: {len(failures)}" + (f" (first: {failures[0]})" if failures else ""))
print(f"a read call without a takeover: median {baseline * 1e3:.3f} ms")
for kind, label in (("kill", "SIGKILL (new daemon started by the keeper)"),
                    ("restart", "imgfs mount --restart (upgrade)")):
    xs = stalls[kind]
    if xs:
        print(f"stall per {label}: median {statistics.median(xs) * 1e3:.0f} ms, "
              f"max {max(xs) * 1e3:.0f} ms over {len(xs)}")
PY
