#!/usr/bin/env bash
# The test command: installs everything (scripts/setup_env.sh), then runs every test:
# GoogleTest through ctest, then pytest. Ends with the runners' own summary lines.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
# Whatever the tests cache (compiled kernels) goes to a temporary folder, removed at the end.
TEST_TMP="$(mktemp -d -t ae_tests.XXXXXX)"
trap 'rm -rf "$TEST_TMP"' EXIT
export XDG_CACHE_HOME="$TEST_TMP/xdg"
export TORCHINDUCTOR_CACHE_DIR="$TEST_TMP/inductor"  # else /tmp/torchinductor_$USER, kept between runs
(cd build/cmake && ctest --output-on-failure -j "$MAX_JOBS")
# pytest in a worker process per core, up to 4 (the CI machine has 2: the suite's NVRTC and
# hipRTC compiles are single-threaded); PYTEST_WORKERS=0 runs it in this process. --dist
# loadgroup: the tests of one xdist_group mark run in one worker (test_gfx90a_emulated.py's
# g++ builds, the torch.compile tests' inductor warm-up), the others go where there is room.
WORKERS="${PYTEST_WORKERS:-$(.venv/bin/python -c 'import os; print(min(4, os.cpu_count() or 1))')}"
.venv/bin/python -m pytest -q -n "$WORKERS" --dist loadgroup tests/python "$@"
