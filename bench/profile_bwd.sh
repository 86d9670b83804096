#!/usr/bin/env bash
# Nsight Compute on the sm80 backward next to FlashAttention-2's (SDPA flash), one call on
# the GPU machine after `bash bench/gpu_check.sh build`. Full report in $OUT/ncu_bwd.txt.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-build/gpu_check}"
mkdir -p "$OUT"
python3 bench/profile_kernels.py bwd > /dev/null  # compile into the disk cache first
ncu --clock-control none -k regex:"ae_bwd$|flash_bwd_dq_dk_dv" --section SpeedOfLight \
    --section ComputeWorkloadAnalysis --section WarpStateStats --section Occupancy \
    --section LaunchStats --section MemoryWorkloadAnalysis_Tables --section InstructionStats \
    python3 bench/profile_kernels.py bwd > "$OUT/ncu_bwd.txt" 2>&1
grep -E "^  [a-z_]+.*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Executed Ipc A|Issue Slots Busy|Registers Per|Achieved Occupancy|Shared Memory Configuration Size|Block Limit|Stall|Warp Cycles Per Issued|Bank|Pipe|One or More|No Eligible" "$OUT/ncu_bwd.txt" | head -120
