#!/usr/bin/env bash
# Diagnoses a C++ exception thrown inside the op crashing the process on the GPU machine.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
g++ --version | head -1; /opt/gcc/bin/g++ --version 2>/dev/null | head -1
SO=$(python3 -c "import torch, attention_engine._C as c; print(c.__file__)")
echo "$SO"; ldd "$SO" | grep -E "stdc|gcc_s|c10|torch"
python3 - <<'PY'
import torch, os
print("torch lib:", os.path.dirname(torch.__file__))
PY
ldd "$(python3 -c 'import torch,os; print(os.path.join(os.path.dirname(torch.__file__), "lib/libc10.so"))')" | grep -E "stdc|gcc_s"
for case in shape index graph; do
python3 - "$case" <<'PY'
import sys, torch, attention_engine as ae
case = sys.argv[1]
q = torch.randn(1, 2, 40, 8, dtype=torch.float64)
try:
    if case == "shape":
        ae.compile()(q, q[:, :1, :, :4], q)
    elif case == "index":
        t = torch.randn(8, dtype=torch.float64)
        ae.compile(lambda s, b, h, qi, k: s + t[qi])(q, q, q)
    else:
        ae.compile(mask_mod=lambda b, h, qi, k: qi * 1.0)
except Exception as e:
    print(case, "raised", type(e).__name__, str(e)[:80])
PY
echo "$case exit $?"
done
cat > /tmp/repro.py <<'PY'
import torch, attention_engine as ae
q = torch.randn(1, 2, 40, 8, dtype=torch.float64)
ae.compile()(q, q[:, :1, :, :4], q)
PY
cuda-gdb -q -batch -ex run -ex bt --args python3 /tmp/repro.py 2>&1 | grep -E "^#|signal|SIG" | head -40
