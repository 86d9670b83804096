#!/usr/bin/env bash
# Nsight Compute on the backward (the sm90 one on Hopper; AE_DISABLE_SM90_BWD=1 for sm80) next
# to FlashAttention-2's (SDPA flash), one call on the GPU machine after
# `bash bench/gpu_check.sh build`. PROFILE_ARGS: profile_kernels.py's "S D [causal]".
# PROFILE_CASE=docmask profiles the document mask's forward instead (PROFILE_ARGS "16384"),
# PROFILE_CASE=sparse dense causal's and the block-sparse forward (PROFILE_ARGS "32768"),
# PROFILE_CASE=linear linear attention's kernels (PROFILE_ARGS "4096 128 gla": GLA alone; the
# source page of PROFILE_KERNEL, default ae_linear_grads).
# Full report in $OUT/ncu_$CASE.txt; per-instruction stall samples of our kernel (SASS, CSV)
# in $OUT/ncu_${CASE}_source.csv, summed by stall reason and by hottest instruction at the end.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-build/gpu_check}"
mkdir -p "$OUT"
ARGS="${PROFILE_ARGS:-8192 128}"
CASE="${PROFILE_CASE:-bwd}"
if [ "$CASE" = bwd ]; then KERNELS='ae_bwd$|flash_bwd_dq_dk_dv' OURS='ae_bwd$'
elif [ "$CASE" = linear ]; then KERNELS='ae_linear_' OURS="${PROFILE_KERNEL:-ae_linear_grads}"
else KERNELS='ae_fwd$' OURS='ae_fwd$'; fi
python3 bench/profile_kernels.py $CASE $ARGS > /dev/null  # compile into the disk cache first
ncu --clock-control none -k regex:"$KERNELS" --section SpeedOfLight \
    --section ComputeWorkloadAnalysis --section WarpStateStats --section Occupancy \
    --section LaunchStats --section MemoryWorkloadAnalysis_Tables --section InstructionStats \
    --section SourceCounters -o "$OUT/ncu_$CASE" -f \
    python3 bench/profile_kernels.py $CASE $ARGS > "$OUT/ncu_run.txt" 2>&1
ncu -i "$OUT/ncu_$CASE.ncu-rep" > "$OUT/ncu_$CASE.txt" 2>&1
ncu -i "$OUT/ncu_$CASE.ncu-rep" -k regex:"$OURS" --page source --print-source sass --csv \
    > "$OUT/ncu_${CASE}_source.csv" 2>&1
grep -E "^  [a-z_]+.*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Executed Ipc A|Issue Slots Busy|Registers Per|Achieved Occupancy|Stall|Warp Cycles Per Issued|Bank|One or More|No Eligible" "$OUT/ncu_$CASE.txt" | head -60
python3 bench/ncu_stalls.py "$OUT/ncu_${CASE}_source.csv" 2>&1 | head -60
