#!/usr/bin/env bash
# Builds the sdist, installs it into a fresh virtual environment (with pip, as a user would:
# the extension is compiled from the sdist's files alone), and runs an attention from an
# unrelated folder. CI runs it (.ci/run); needs the .venv that scripts/setup_env.sh makes,
# whose torch the new environment borrows instead of downloading it again.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VPY="$ROOT/.venv/bin/python"
WORK="$(mktemp -d -t ae_sdist.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

echo "[sdist] building the sdist"
(cd "$ROOT" && "$VPY" setup.py -q sdist -d "$WORK/dist" >"$WORK/sdist.log" 2>&1) \
  || { tail -n 40 "$WORK/sdist.log"; exit 1; }
SDIST="$(ls "$WORK"/dist/attention_engine-*.tar.gz)"
echo "[sdist] $(basename "$SDIST"): $(tar tzf "$SDIST" | wc -l) files"

"$VPY" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
BASE_SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
NEW_SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# torch, setuptools, ninja: the .venv's, through a .pth (only the package under test is new).
# (A path a .pth adds is not scanned for .pth files: the checkout's own is not seen.)
echo "$BASE_SITE" > "$NEW_SITE/ae_base_site.pth"

echo "[sdist] pip install from the sdist (compiles the extension)"
start=$(date +%s)
# -O0 (setup.py's AE_BUILD_OPT): what is checked is that the sdist builds and runs; the
# optimized build is the in-place one the tests run on (a third less compile time).
(cd "$WORK" && PATH="$ROOT/.venv/bin:$PATH" MAX_JOBS="${MAX_JOBS:-$(nproc)}" AE_BUILD_OPT=-O0 \
  "$PY" -m pip install --no-build-isolation --no-deps --no-cache-dir "$SDIST" \
  >"$WORK/install.log" 2>&1) || {
  grep -n -E "error:|FAILED:|Killed" "$WORK/install.log" | head -n 40; tail -n 30 "$WORK/install.log"
  echo "[sdist] FAILED: pip install from the sdist"; exit 1; }
echo "[sdist] installed in $(( $(date +%s) - start )) s"

cd "$WORK"
"$PY" -I - <<'PY'
import os
import torch
import attention_engine as ae
assert "ae_sdist." in ae.__file__, f"imported from {ae.__file__}, not the installed sdist"
attn = ae.compile(score_mod=ae.mods.alibi(ae.mods.alibi_slopes(2)), mask_mod=ae.mods.causal)
q = torch.randn(1, 2, 16, 8, requires_grad=True)
attn(q, q, q).sum().backward()
print(f"[sdist] import and run OK: attention_engine {ae.__version__} from {os.path.dirname(ae.__file__)}")
PY
