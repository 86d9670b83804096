#!/usr/bin/env bash
# One call on the GPU machine (the `device` tool): build the package the way a user installs
# it, run the Python tests (GPU tests included), the JIT check and the benchmarks, then print
# a short table. Logs go to $OUT (or build/gpu_check when run elsewhere).
#
#   bash bench/gpu_check.sh            # everything
#   bash bench/gpu_check.sh build test # some steps: build, test, jit, smoke, fwd, bwd, e2e, grads,
#                                      # decode, norm, parts, exactpv, pers, generate, varlen, mla, sparse, sdecode, pooled, linear, docmask,
#                                      # sweep, bench
#   TESTS="tests/python/test_gpu_kernels.py -x -k 'causal or plain'" bash bench/gpu_check.sh build test
# A step that runs past STEP_TIMEOUT seconds (default 1200) is stopped and counts as failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-build/gpu_check}"
mkdir -p "$OUT"
STEPS="${*:-build test jit bench}"
export PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}"
PY="${PYTHON:-python3}"
declare -a SUMMARY

step() {  # step NAME LOG CMD...: run, log, remember the verdict and time
  local name="$1" log="$OUT/$2"; shift 2
  local t0=$SECONDS
  timeout "${STEP_TIMEOUT:-1200}" "$@" >"$log" 2>&1
  local rc=$?
  SUMMARY+=("$(printf '%-8s %-6s %4ss  %s' "$name" "$([ $rc = 0 ] && echo ok || echo FAIL)" $((SECONDS - t0)) "$(tail -n 1 "$log" | cut -c1-90)")")
  [ $rc = 0 ] || { echo "---- $name failed, end of $log:"; tail -n 40 "$log"; }
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" >> "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

for s in $STEPS; do
  case "$s" in
    build) step build build.log $PY -m pip install --no-build-isolation --no-deps -v -e . || break ;;
    test)  step test pytest.log bash -c "$PY -m pytest -q -rs ${TESTS:-tests/python}" ;;  # TESTS may quote
    jit)   step jit jit_gpu_check.log $PY bench/jit_gpu_check.py ;;
    smoke) step smoke smoke.log $PY bench/kernel_smoke.py ;;
    fwd)   step fwd fwd_compare.log $PY bench/fwd_compare.py ;;
    bwd)   step bwd bwd_compare.log $PY bench/bwd_compare.py ${BWD_ARGS:-} ;;
    e2e)   step e2e e2e_train.log $PY bench/e2e_train.py ${E2E_ARGS:-} ;;
    grads) step grads captured_grads.log $PY bench/captured_grads.py ;;
    decode) step decode decode.log $PY bench/decode_bench.py ${DECODE_ARGS:-} ;;
    norm)  step norm normalizer.log $PY bench/normalizer_bench.py ${NORM_ARGS:-} ;;
    parts) step parts retention_parts.log $PY bench/retention_parts.py ${PARTS_ARGS:-} ;;
    exactpv) step exactpv exact_pv_cost.log $PY bench/exact_pv_cost.py ${EXACTPV_ARGS:-} ;;
    pers)  step pers persistent_ab.log $PY bench/persistent_ab.py ${PERS_ARGS:-} ;;
    generate) step generate generate.log $PY bench/generate.py ${GENERATE_ARGS:-} ;;
    varlen) step varlen varlen.log $PY bench/varlen_bench.py ${VARLEN_ARGS:-} ;;
    mla)   step mla mla.log $PY bench/mla_bench.py ${MLA_ARGS:-} ;;
    sparse) step sparse sparse.log $PY bench/sparse_bench.py ${SPARSE_ARGS:-} ;;
    sdecode) step sdecode sparse_decode.log $PY bench/sparse_decode_bench.py ${SDECODE_ARGS:-} ;;
    pooled) step pooled pooled.log $PY bench/pooled_bench.py ${POOLED_ARGS:-} ;;
    linear) step linear linear.log $PY bench/linear_bench.py ${LINEAR_ARGS:-} ;;
    # The document mask at 16k against FlexAttention, with causal for scale (issue 17's table).
    docmask) step docmask docmask.log $PY bench/attention_bench.py --variants causal,document \
               --variant-seqlen 16384 --methods attention_engine,flex,sdpa-cudnn ;;
    sweep) step sweep sweep.log $PY bench/tile_sweep.py ${SWEEP:-} ;;  # SWEEP="fwd90:128,2,1,1 ..."
    bench) [ -f bench/attention_bench.py ] && step bench bench.log $PY bench/attention_bench.py --out "$OUT/bench.md" ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done

echo; echo "== jit"; tail -n 20 "$OUT/jit_gpu_check.log" 2>/dev/null
[ -f "$OUT/sweep.log" ] && { echo "== sweep"; cat "$OUT/sweep.log"; }
[ -f "$OUT/smoke.log" ] && { echo "== smoke"; tail -n 20 "$OUT/smoke.log"; }
[ -f "$OUT/fwd_compare.log" ] && { echo "== fwd"; cat "$OUT/fwd_compare.log"; }
[ -f "$OUT/bwd_compare.log" ] && { echo "== bwd"; tail -n 14 "$OUT/bwd_compare.log"; }
[ -f "$OUT/e2e_train.log" ] && { echo "== e2e"; tail -n 6 "$OUT/e2e_train.log"; }
[ -f "$OUT/captured_grads.log" ] && { echo "== grads"; tail -n 5 "$OUT/captured_grads.log"; }
[ -f "$OUT/decode.log" ] && { echo "== decode"; grep -E "^(decode|B[0-9])" "$OUT/decode.log"; }
[ -f "$OUT/normalizer.log" ] && { echo "== norm"; cat "$OUT/normalizer.log"; }
[ -f "$OUT/retention_parts.log" ] && { echo "== parts"; cat "$OUT/retention_parts.log"; }
[ -f "$OUT/generate.log" ] && { echo "== generate"; tail -n 3 "$OUT/generate.log"; }
[ -f "$OUT/exact_pv_cost.log" ] && { echo "== exactpv"; cat "$OUT/exact_pv_cost.log"; }
[ -f "$OUT/persistent_ab.log" ] && { echo "== pers"; cat "$OUT/persistent_ab.log"; }
[ -f "$OUT/sparse.log" ] && { echo "== sparse"; grep "^|" "$OUT/sparse.log"; }
[ -f "$OUT/sparse_decode.log" ] && { echo "== sdecode"; grep "^|" "$OUT/sparse_decode.log"; }
[ -f "$OUT/pooled.log" ] && { echo "== pooled"; grep "^|" "$OUT/pooled.log"; }
[ -f "$OUT/linear.log" ] && { echo "== linear"; grep -E "^\||^\(" "$OUT/linear.log"; }
[ -f "$OUT/docmask.log" ] && { echo "== docmask"; tail -n 6 "$OUT/docmask.log"; }
[ -f "$OUT/bench.md" ] && { echo "== bench"; cat "$OUT/bench.md"; }
echo; echo "== summary"; printf '%s\n' "${SUMMARY[@]}"
