#!/usr/bin/env bash
# Installs everything the project needs (Debian packages, a virtual environment in .venv with
# the pinned PyTorch), then builds the extension in place and the C++ tests. Idempotent: a
# second run checks, finds everything there, and rebuilds only what changed.
# Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# libamdhip64-dev: hipRTC (compiles gfx90a without a GPU); llvm-14: llvm-objdump, which the
# gfx90a compile-all check disassembles with (tests/python/test_compile_gfx90a.py).
APT_PACKAGES="g++ cmake ninja-build googletest libgtest-dev libfmt-dev libamdhip64-dev llvm-14"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "[setup] apt-get install$missing"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing >/dev/null
fi

PY="${PYTHON:-python3}"
# A virtual environment made for another folder (a moved checkout) has scripts whose first
# line names the old path: make it anew, and drop the build outputs that name it too.
if [ -f .venv/.root ] && [ "$(cat .venv/.root)" != "$ROOT" ]; then
  echo "[setup] .venv was made for $(cat .venv/.root): making it anew"
  rm -rf .venv build python/attention_engine/_C*.so
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
  echo "$ROOT" > .venv/.root
fi
VPY="$ROOT/.venv/bin/python"
REQ_STAMP=".venv/.requirements.$(sha1sum requirements-dev.txt | cut -c1-12)"
if [ ! -f "$REQ_STAMP" ]; then
  echo "[setup] pip install -r requirements-dev.txt"
  "$VPY" -m pip install -q --upgrade pip
  "$VPY" -m pip install -q -r requirements-dev.txt
  touch "$REQ_STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

# The extension, built once, in place (ninja makes the second build a no-op). A .pth file puts
# python/ on the venv's path, so `import attention_engine` works from anywhere in it (what an
# editable install does, without pip building the extension a second time).
mkdir -p build
run_logged() {  # run quietly; on failure show the log's end
  local log="$1"; shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 60 "$log"; echo "[setup] FAILED: $* (full log: $log)"; return 1
  fi
}
echo "[setup] building attention_engine._C"
run_logged build/setup_ext.log "$VPY" setup.py build_ext --inplace
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$ROOT/python" > "$SITE/attention_engine_dev.pth"

# The C++ core and tests build as RelWithDebInfo (-O2 -g), or with the flags AE_CPP_TEST_FLAGS
# gives: CI (.ci/run) gives "-O0 -DNDEBUG", less than half the compile time (nobody debugs the
# tests there, and ctest runs in seconds either way). The extension is built -O2 regardless.
if [ -n "${AE_CPP_TEST_FLAGS:-}" ]; then
  CMAKE_BUILD=(-DCMAKE_BUILD_TYPE=Custom "-DCMAKE_CXX_FLAGS_CUSTOM=$AE_CPP_TEST_FLAGS")
else
  CMAKE_BUILD=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
fi
echo "[setup] building the C++ core and tests"
run_logged build/setup_cmake.log bash scripts/cmake_configure.sh . build/cmake -G Ninja \
  "${CMAKE_BUILD[@]}"
run_logged build/setup_cmake_build.log cmake --build build/cmake -j "$MAX_JOBS"
