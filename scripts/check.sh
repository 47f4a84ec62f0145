#!/usr/bin/env bash
# The pre-commit loop: format check, plain build, unit tests, clang-tidy of the changed
# sources (a few minutes on 2 cores).
# Everything CI runs is scripts/test.sh; this is its quick subset.
#
# Usage: scripts/check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
exec scripts/test.sh format unit tidy
