#!/usr/bin/env bash
# Checks the one direction of dependencies: tools -> fs -> cache -> registry -> base, and
# inside fs/: {fuse, mount, run} -> {writable, core, lazy, image_ops} -> {tree, upper} -> layer,
# and fuse -> layer_store -> {mount, core} (the layer store sits between the adapter and mount).
# A module may include only itself and modules to its right; only fs/fuse/ includes libfuse.
# CMake enforces the same through per-library include directories (CMakeLists.txt,
# imgfs_library); this check names the offending line, and also covers tests' own rules. And the repository stands
# alone: nothing in it reads a folder beside it (the tests' fixtures are in tests/fixtures/).
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
bad=0
check() {  # module, forbidden include prefixes...
  local mod=$1; shift
  for p in "$@"; do
    if grep -rnE "#include \"$p/" "$mod" --include='*.h' --include='*.cc' 2>/dev/null; then
      echo "error: $mod/ must not include $p/ (dependency direction)"; bad=1
    fi
  done
}
check base registry cache fs tools
check registry cache fs tools
check cache fs tools
check fs tools
check fs/layer fs/upper fs/tree fs/core fs/writable fs/lazy fs/image_ops fs/mount fs/fuse fs/run fs/layer_store
check fs/upper fs/layer fs/tree fs/core fs/writable fs/lazy fs/image_ops fs/mount fs/fuse fs/run fs/layer_store
check fs/tree fs/core fs/writable fs/lazy fs/image_ops fs/mount fs/fuse fs/run fs/layer_store
check fs/core fs/writable fs/lazy fs/image_ops fs/mount fs/fuse fs/run fs/layer_store
check fs/writable fs/lazy fs/image_ops fs/mount fs/fuse fs/run fs/layer_store
check fs/lazy fs/core fs/writable fs/image_ops fs/mount fs/fuse fs/run fs/layer_store
check fs/image_ops fs/core fs/writable fs/lazy fs/mount fs/fuse fs/run fs/layer_store
check fs/mount fs/writable fs/fuse fs/run fs/layer_store
check fs/fuse fs/mount fs/lazy fs/image_ops fs/run
check fs/layer_store fs/writable fs/fuse fs/run
check fs/run fs/layer fs/tree fs/core fs/writable fs/lazy fs/image_ops fs/mount fs/fuse fs/layer_store
fuse=$(grep -rlE '#include <fuse(_lowlevel)?\.h>' base registry cache fs tools 2>/dev/null \
  | grep -vE '^fs/fuse/' || true)
if [ -n "$fuse" ]; then echo "error: only fs/fuse/ includes libfuse: $fuse"; bad=1; fi
beside=$(grep -rnF "../$(printf shared)" base registry cache fs tools tests scripts .ci CMakeLists.txt \
  --include='*.h' --include='*.cc' --include='*.sh' --include='*.py' --include='*.txt' \
  --include=run 2>/dev/null | grep -v -e '^tests/fixtures/' -e '^scripts/check-deps.sh:' || true)
if [ -n "$beside" ]; then echo "error: the repository must not read a folder beside it: $beside"; bad=1; fi
if [ $bad -eq 0 ]; then echo "module dependencies OK"; fi
exit $bad
