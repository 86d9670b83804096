#!/usr/bin/env bash
# The block-sparse forward under several sm90 forward tiles (AE_SM90_FWD, csrc/plan/overrides.h),
# one sparse_bench run each (forward only, FlexAttention left out); "table" is the planner's
# choice. The dense causal row of each run uses the same override, so it is the dense speed of
# that tile. Tables only on stdout; full logs in $OUT/sparse_ab_<cfg>.log.
#
#   CONFIGS="table 64,2,1,0 64,2,1,1" SPARSE_ARGS="--seqlens 32k --densities 0.1,0.5" \
#       bash bench/sparse_tile_ab.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-build/gpu_check}"
mkdir -p "$OUT"
for cfg in ${CONFIGS:-table 64,2,1,0 64,2,1,1}; do
  log="$OUT/sparse_ab_${cfg//,/_}.log"
  if [ "$cfg" = table ]; then
    timeout "${CASE_TIMEOUT:-120}" python3 bench/sparse_bench.py --no-bwd --flex-mode none \
      ${SPARSE_ARGS:-} > "$log" 2>&1
  else
    AE_SM90_FWD="$cfg" timeout "${CASE_TIMEOUT:-120}" python3 bench/sparse_bench.py --no-bwd \
      --flex-mode none ${SPARSE_ARGS:-} > "$log" 2>&1
  fi
  echo "== AE_SM90_FWD=$cfg (exit $?)"
  grep "^| [0-9]" "$log"
done
