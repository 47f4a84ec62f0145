#!/usr/bin/env bash
# Runs clang-tidy (the checks of .clang-tidy) over the C++ sources a change touched.
#
#   scripts/tidy.sh [BASE]   sources changed since BASE (default: the last commit, HEAD~1),
#                            plus uncommitted ones, with the compile commands of build/plain
# Exit status 0 when clang-tidy finds nothing. Headers are checked through the sources that
# include them (HeaderFilterRegex in .clang-tidy).
set -uo pipefail
cd "$(dirname "$0")/.."
base=${1:-HEAD~1}
db=${IMGFS_TIDY_BUILD:-build/plain}
if [ ! -f "$db/compile_commands.json" ]; then scripts/build.sh plain >/dev/null || exit 1; fi
if ! git rev-parse -q --verify "$base^{commit}" >/dev/null; then base=$(git rev-list --max-parents=0 HEAD); fi
mapfile -t files < <( { git diff --name-only --diff-filter=d "$base" -- '*.cc';
                        git ls-files --others --exclude-standard -- '*.cc'; } |
                      grep -E '^(base|registry|cache|fs|tools)/' | sort -u)
if [ ${#files[@]} -eq 0 ]; then echo "tidy: no changed sources since $base"; exit 0; fi
echo "tidy: ${#files[@]} sources changed since $base"
run-clang-tidy -quiet -p "$db" -j "$(nproc)" "${files[@]/#/$PWD/}" >"$db/tidy.log" 2>&1
rc=$?
grep -E '(warning|error): ' "$db/tidy.log" | sort -u | head -50
[ $rc -eq 0 ] && echo "tidy: clean" || echo "tidy: findings (full log: $db/tidy.log)"
exit $rc
