#!/usr/bin/env bash
# The GPU machine's side of bench/fa4_pack.sh. `stash`: keep build/fa4/part1 (carried by this
# call) in the home folder for the next call. Otherwise: join it with build/fa4/part2 (carried
# by this call), unpack to ~/fa4/site, and print the PYTHONPATH for FlashAttention-4
# (`pip --target` trees skip .pth files: cutlass's dsl_packages go on the path by hand).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${1:-}" = stash ]; then
  mkdir -p ~/fa4 && cp build/fa4/part1 ~/fa4/part1 && ls -l ~/fa4
  exit 0
fi
[ -f ~/fa4/part1 ] || { echo "no ~/fa4/part1: the stash call was on another machine" >&2; exit 1; }
cat ~/fa4/part1 build/fa4/part2 | xz -d | tar -C ~/fa4 -x
echo "export PYTHONPATH=$HOME/fa4/site:$HOME/fa4/site/nvidia_cutlass_dsl/dsl_packages\${PYTHONPATH:+:\$PYTHONPATH}"
