#!/usr/bin/env bash
# The demo: installs everything (scripts/setup_env.sh), then compiles a handful of variants,
# prints each op graph, runs them on small CPU tensors and checks them against plain PyTorch.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
.venv/bin/python -m attention_engine.demo "$@"
