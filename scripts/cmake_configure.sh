#!/usr/bin/env bash
# cmake_configure.sh SOURCE_DIR BUILD_DIR [cmake args...]: configures the C++ core's build.
# A build folder configured for another source folder (a moved or copied checkout) is
# removed first: CMake refuses it ("CMakeCache.txt directory ... is different").
set -euo pipefail
src="$(cd "$1" && pwd)"; build="$2"; shift 2
cache="$build/CMakeCache.txt"
if [ -f "$cache" ]; then
  home="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$cache")"
  if [ "$home" != "$src" ]; then
    echo "[setup] $build was configured for $home: removing it"
    rm -rf "$build"
  fi
fi
cmake -S "$src" -B "$build" "$@"
