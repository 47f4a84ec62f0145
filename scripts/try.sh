#!/usr/bin/env bash
# The imgfs demo on a fresh Debian 12 machine:
#   1. installs the dependencies (scripts/setup.sh) and builds (scripts/build.sh plain);
#   2. starts Debian's docker-registry on a free 127.0.0.1 port (temporary config and storage);
#   3. pushes a small demo image to it (the `tiny` test fixture of tests/fixtures: three
#      layers with whiteouts, hardlinks, xattrs, a setuid file; see its README.md);
#   4. `imgfs pull`s it into a temporary store, then `imgfs images` and `imgfs inspect`;
#   5. mounts it, lists it and unmounts it.
# Everything it starts is stopped, and everything it creates removed, on exit.
#
# Usage: scripts/try.sh            (needs root, or sudo, the first time to install packages)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Installing dependencies (scripts/setup.sh)"
scripts/setup.sh

say "Building (scripts/build.sh plain imgfs)"
scripts/build.sh plain imgfs
imgfs=$repo/build/plain/tools/imgfs

work=$(mktemp -d /tmp/imgfs-try.XXXXXX)
registry_pid=""
mountpoint=""
cleanup() {
  set +e
  if [ -n "$mountpoint" ] && mountpoint -q "$mountpoint" 2>/dev/null; then
    "$imgfs" --root "$work/store" umount "$mountpoint" >/dev/null 2>&1 ||
      fusermount3 -u "$mountpoint" 2>/dev/null || umount -l "$mountpoint" 2>/dev/null
  fi
  if [ -n "$registry_pid" ]; then
    kill "$registry_pid" 2>/dev/null
    wait "$registry_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

say "Starting docker-registry on a free 127.0.0.1 port"
. scripts/lib/registry.sh
start_registry "$work/registry" || exit 1
registry_pid=$REGISTRY_PID
port=$REGISTRY_PORT
echo "registry at 127.0.0.1:$port (pid $registry_pid)"

say "Preparing a demo image"
layout=$repo/tests/fixtures/tiny-gzip
echo "using the test fixture $layout"

image=127.0.0.1:$port/demo/app:1.0
say "Pushing it: skopeo copy oci:$layout:latest docker://$image"
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:latest" "docker://$image"

store=$work/store
say "imgfs pull $image"
"$imgfs" --root "$store" pull "$image"

say "imgfs images"
"$imgfs" --root "$store" images --digests

say "imgfs inspect $image"
"$imgfs" --root "$store" inspect "$image"

mountpoint=$work/mnt
mkdir -p "$mountpoint"
say "imgfs mount $image $mountpoint"
"$imgfs" --root "$store" mount "$image" "$mountpoint"
say "ls -la $mountpoint"
ls -la "$mountpoint"
if [ -f "$mountpoint/etc/os-release" ]; then
  say "cat $mountpoint/etc/os-release"
  cat "$mountpoint/etc/os-release"
fi
say "find $mountpoint | wc -l"
find "$mountpoint" | wc -l
say "imgfs umount $mountpoint"
"$imgfs" --root "$store" umount "$mountpoint"

say "Done: the registry is stopped and $work removed on exit"
