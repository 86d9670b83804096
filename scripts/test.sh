#!/usr/bin/env bash
# The test command: installs everything (scripts/setup_env.sh), then runs every test:
# GoogleTest through ctest, then pytest. Ends with the runners' own summary lines.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
# Whatever the tests cache (compiled kernels) goes to a temporary folder, removed at the end.
TEST_TMP="$(mktemp -d -t ae_tests.XXXXXX)"
trap 'rm -rf "$TEST_TMP"' EXIT
export XDG_CACHE_HOME="$TEST_TMP/xdg"
(cd build/cmake && ctest --output-on-failure -j "$MAX_JOBS")
.venv/bin/python -m pytest -q tests/python "$@"
