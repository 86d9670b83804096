#!/usr/bin/env bash
# Nsight Compute on our sm90 forward and backward next to FlashAttention-4's, same shape, one
# call on the GPU machine after `bash bench/gpu_check.sh build` and with FlashAttention-4 on
# the path (bench/fa4_pack.sh). PROFILE_ARGS: profile_kernels.py's "S D [causal]".
# Writes $OUT/ncu_vsfa4.txt (every kernel's sections) and $OUT/ncu_vsfa4_raw.csv (every
# metric collected), and prints the lines that compare them.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-build/gpu_check}"
mkdir -p "$OUT"
ARGS="${PROFILE_ARGS:-8192 128}"
python3 bench/profile_kernels.py vsfa4 $ARGS > "$OUT/vsfa4_warm.txt" 2>&1 || { tail -20 "$OUT/vsfa4_warm.txt"; exit 1; }
# Our main kernels, and FlashAttention-4's (CuTe DSL names: kernel_cutlass_kernel_...Forward/
# Backward...); its pre/post-processing kernels too, small.
ncu --clock-control none -k regex:'ae_fwd$|ae_bwd$|[Ff]lash[Aa]ttention' --section SpeedOfLight \
    --section ComputeWorkloadAnalysis --section WarpStateStats --section Occupancy \
    --section LaunchStats --section InstructionStats --section MemoryWorkloadAnalysis_Tables \
    -o "$OUT/ncu_vsfa4" -f python3 bench/profile_kernels.py vsfa4 $ARGS > "$OUT/ncu_vsfa4_run.txt" 2>&1 \
  || { tail -20 "$OUT/ncu_vsfa4_run.txt"; exit 1; }
ncu -i "$OUT/ncu_vsfa4.ncu-rep" > "$OUT/ncu_vsfa4.txt" 2>&1
ncu -i "$OUT/ncu_vsfa4.ncu-rep" --page raw --csv > "$OUT/ncu_vsfa4_raw.csv" 2>&1
grep -E "^  [A-Za-z_].*\(|Duration|Compute \(SM\) Throughput|Executed Ipc A|Issue Slots Busy|Registers Per|Executed Instructions  |Warp Cycles Per Issued|No Eligible|Dynamic Shared" "$OUT/ncu_vsfa4.txt" | head -80
