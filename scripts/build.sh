#!/usr/bin/env bash
# Configures and builds one configuration into build/<config>:
#   plain  gcc, RelWithDebInfo
#   asan   clang, AddressSanitizer + UndefinedBehaviorSanitizer, libFuzzer targets
#   tsan   clang, ThreadSanitizer
# Usage: scripts/build.sh [plain|asan|tsan] [ninja targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-plain}
shift || true
case "$config" in
  plain) args=(-DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++) ;;
  asan) args=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug
              -DIMGFS_SANITIZE=address,undefined -DIMGFS_FUZZ=ON) ;;
  tsan) args=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug
              -DIMGFS_SANITIZE=thread) ;;
  *) echo "unknown config: $config (plain|asan|tsan)" >&2; exit 2 ;;
esac
dir=build/$config
if [ ! -f "$dir/build.ninja" ]; then
  cmake -S . -B "$dir" -G Ninja "${args[@]}" >/dev/null
fi
ninja -C "$dir" "$@"
