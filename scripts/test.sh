#!/usr/bin/env bash
# Builds and runs every test: what CI runs (.ci/run calls exactly this).
#
#   scripts/test.sh            setup, then plain, asan (+ fuzz), tsan
#   scripts/test.sh plain      one configuration only (plain | unit | asan | tsan | fuzz | format | tidy)
#
# plain: every label (unit, integration, e2e, hostile, fuzz-replay) with gcc.
# unit:  the unit tests alone with gcc (the quick loop; scripts/check.sh adds the format check).
# asan:  every label under AddressSanitizer + UndefinedBehaviorSanitizer (clang).
# fuzz:  each libFuzzer target (from the asan build) for a bounded time over its corpus.
# tsan:  unit tests (stress tests included) under ThreadSanitizer.
# tidy:  clang-tidy (.clang-tidy) over the sources changed by the last commit (scripts/tidy.sh).
# Any failed or skipped test fails the run. The last line is "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(format plain tidy asan fuzz tsan)

scripts/setup.sh || { echo "setup failed"; exit 1; }

jobs=$(nproc)
passed=0
failed=0
failures=()
fuzz_seconds=${IMGFS_FUZZ_SECONDS:-20}

run_ctest() {  # config, ctest args...
  local config=$1; shift
  local log="build/$config/ctest.log"
  (cd "build/$config" && ctest --output-on-failure --timeout 600 -j "$jobs" "$@") 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local p f s
  p=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' "$log" || true)
  f=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(\*\*\*Failed|\*\*\*Exception|\*\*\*Timeout|Not Run)' "$log" || true)
  # The status word ends the line ("Skipped   0.01 sec"); test names may contain it too.
  s=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*Skipped +[0-9.]+ sec' "$log" || true)
  passed=$((passed + p))
  failed=$((failed + f + s))
  if [ "$s" -gt 0 ]; then failures+=("$config: $s skipped tests (a skip is a failure here)"); fi
  if [ "$rc" -ne 0 ] || [ "$f" -gt 0 ]; then failures+=("$config: ctest failed ($f failed)"); fi
  # Name each failed test in the summary: CI shows only the end of the output.
  # With each, the first lines of its output that say why (--output-on-failure puts them after it).
  local line
  while IFS= read -r line; do failures+=("$config: $line"); done < <(awk '
    /^ *[0-9]+\/[0-9]+ Test +#[0-9]+: / {
      inside = ($0 ~ /\*\*\*(Failed|Exception|Timeout)|Not Run/); why = 0
      if (inside && shown < 20) { sub(/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: /, ""); sub(/ \.\.\.+/, " "); print; shown++ }
      next }
    /^ +Start [0-9]+: / { inside = 0; next }
    inside && why < 4 && (after > 0 || /Failure$|[Ee]rror|what\(\)|Sanitizer|Timeout/) {
      after = /Failure$/ ? 2 : after - 1; print "  " substr($0, 1, 240); why++ }
  ' "$log")
  if [ "$p" -eq 0 ]; then failures+=("$config: no test ran"); failed=$((failed + 1)); fi
}

timings=()
for config in "${configs[@]}"; do
  echo "=== $config ==="
  started=$SECONDS
  case "$config" in
    format)
      if scripts/format.sh --check; then passed=$((passed + 1)); else
        failed=$((failed + 1)); failures+=("format: clang-format differences"); fi ;;
    plain)
      if scripts/build.sh plain; then run_ctest plain; else
        failed=$((failed + 1)); failures+=("plain: build failed"); fi ;;
    unit)
      if scripts/build.sh plain; then run_ctest plain -L unit; else
        failed=$((failed + 1)); failures+=("unit: build failed"); fi ;;
    asan)
      export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
      export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
      export LSAN_OPTIONS=suppressions=$root/tests/lsan_suppress.txt
      if scripts/build.sh asan; then run_ctest asan; else
        failed=$((failed + 1)); failures+=("asan: build failed"); fi ;;
    fuzz)
      if [ ! -d build/asan ]; then scripts/build.sh asan >/dev/null || true; fi
      shopt -s nullglob
      fuzzers=(build/asan/tests/*_fuzz)
      if [ ${#fuzzers[@]} -eq 0 ]; then
        failed=$((failed + 1)); failures+=("fuzz: no fuzz targets were built")
      fi
      # One target per core at a time: each is single-threaded.
      fuzz_one() {  # binary; its status is the fuzzer's
        local bin=$1 name work rc
        name=$(basename "$bin" _fuzz)
        work=$(mktemp -d)
        cp -r "tests/fuzz/corpus/$name"/. "$work"/ 2>/dev/null || true
        "$bin" -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -timeout=10 \
          -print_final_stats=0 "$work" >"build/asan/fuzz-$name.log" 2>&1
        rc=$?
        rm -rf "$work"
        return $rc
      }
      declare -A fuzz_pids=()
      for bin in "${fuzzers[@]}"; do
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
        fuzz_one "$bin" &
        fuzz_pids[$bin]=$!
      done
      for bin in "${fuzzers[@]}"; do
        name=$(basename "$bin" _fuzz)
        if wait "${fuzz_pids[$bin]}"; then
          echo "fuzz $name: ok (${fuzz_seconds}s)"; passed=$((passed + 1))
        else
          echo "fuzz $name: FAILED"; tail -40 "build/asan/fuzz-$name.log"
          failed=$((failed + 1)); failures+=("fuzz: $name")
        fi
      done ;;
    tidy)
      if scripts/tidy.sh "${IMGFS_TIDY_BASE:-HEAD~1}"; then passed=$((passed + 1)); else
        failed=$((failed + 1)); failures+=("tidy: clang-tidy findings"); fi ;;
    tsan)
      export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
      if scripts/build.sh tsan unit_tests; then run_ctest tsan -L unit; else
        failed=$((failed + 1)); failures+=("tsan: build failed"); fi ;;
    *) echo "unknown configuration $config"; exit 2 ;;
  esac
  timings+=("$config $((SECONDS - started)) s")
done

echo
for t in "${timings[@]}"; do echo "time: $t"; done
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ ${#failures[@]} -eq 0 ]
