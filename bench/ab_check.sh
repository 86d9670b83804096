#!/usr/bin/env bash
# A/B on the GPU machine: this tree against a base tree in .base/ (made here with
#   mkdir .base && git archive <commit> csrc templates python third_party setup.py tools bench \
#     pyproject.toml | tar -x -C .base      and carried: the device tool's carry=[".base"]),
# both built in place, each benchmark run on both in the same call. Logs under $OUT, a short
# table last. Steps, in the order given (each call of the device tool is at most 10 minutes,
# so split them over calls made within the machine's warm window):
#   build   builds both (in parallel), this tree as gpu_check.sh does; the base's package and
#           benchmarks are copied to $HOME/ab_base, which outlives the call while the machine
#           stays warm (a later call need not carry .base, whose copy would replace the build)
#   test    this tree's Python tests, GPU tests included (the compile-all check is CI's)
#   bench   bench/attention_bench.py: every method on this tree, attention_engine alone on base
#   fwd     bench/fwd_compare.py on each (each tree's own script)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-build/ab_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-8}"
PY="${PYTHON:-python3}"
BASE="$HOME/ab_base"

for s in "$@"; do
  case "$s" in
    build)
      [ -d .base ] || { echo "no .base/ tree"; exit 2; }
      (cd .base && $PY setup.py build_ext --inplace > "$OUT/build_base.log" 2>&1
       echo "base build rc=$?"; rm -rf "$BASE"; mkdir -p "$BASE" && cp -r python bench "$BASE"/) &
      $PY -m pip install --no-build-isolation --no-deps -v -e . > "$OUT/build.log" 2>&1; echo "build rc=$?"
      wait ;;
    test)
      $PY -m pytest -q -rs tests/python --ignore=tests/python/test_compile_all.py > "$OUT/pytest.log" 2>&1
      echo "test rc=$?"
      tail -n 3 "$OUT/pytest.log" ;;
    bench)
      $PY bench/attention_bench.py --out "$OUT/bench.md" > "$OUT/bench.log" 2>&1; echo "bench rc=$?"
      PYTHONPATH="$BASE/python" $PY "$BASE/bench/attention_bench.py" --methods attention_engine \
        --out "$OUT/bench_base.md" > "$OUT/bench_base.log" 2>&1; echo "bench base rc=$?"
      echo "== bench (this tree)"; cat "$OUT/bench.md"
      echo "== bench (base)"; cat "$OUT/bench_base.md" ;;
    fwd)
      $PY bench/fwd_compare.py > "$OUT/fwd.log" 2>&1; echo "fwd rc=$?"
      PYTHONPATH="$BASE/python" $PY "$BASE/bench/fwd_compare.py" > "$OUT/fwd_base.log" 2>&1
      echo "fwd base rc=$?"
      echo "== fwd_compare (this tree)"; cat "$OUT/fwd.log"
      echo "== fwd_compare (base)"; cat "$OUT/fwd_base.log" ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
