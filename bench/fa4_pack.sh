#!/usr/bin/env bash
# FlashAttention-4 (the speed bar, issue 17) for the GPU machine, which has no network: its
# wheels (../shared/notes/testing-and-benchmarks.md) unzipped into one tree, xz -9, split into
# two parts under build/fa4/ (each under one call's 64 MiB carry). Run here, then on the GPU
# machine in two calls made within the 30 s warm window:
#
#   bash bench/fa4_pack.sh                                  # here, once (network, ~2 min)
#   run: carry ["build/fa4/part1"], command "bash bench/fa4_unpack.sh stash"
#   run: carry ["build/fa4/part2"], command
#        'eval "$(bash bench/fa4_unpack.sh)" && bash bench/gpu_check.sh build bwd'
#
# bench/fa4_unpack.sh prints the PYTHONPATH that makes `flash_attn.cute` importable;
# bench/bwd_compare.py then adds FlashAttention-4's fwd+bwd ("fa4") to its lines. Measured:
# two parts of 34 MB (flash-attn-4 4.0.0b36, nvidia-cutlass-dsl 4.8.1), ~6 min here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=build/fa4
PY="${PYTHON:-.venv/bin/python}"
rm -rf "$OUT" && mkdir -p "$OUT/wheels" "$OUT/site"
# The GPU machine's Python is 3.12 (x86_64, manylinux 2.28).
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform any \
  -d "$OUT/wheels" flash-attn-4==4.0.0b36 nvidia-cutlass-dsl nvidia-cutlass-dsl-libs-base \
  nvidia-cutlass-dsl-libs-core nvidia-cutlass-dsl-libs-cu13 quack-kernels apache-tvm-ffi \
  torch-c-dlpack-ext
for w in "$OUT"/wheels/*.whl; do "$PY" -m zipfile -e "$w" "$OUT/site"; done
tar -C "$OUT" -c site | xz -9 -T2 > "$OUT/fa4.tar.xz"
split -n 2 -d "$OUT/fa4.tar.xz" "$OUT/part"
mv "$OUT/part00" "$OUT/part1" && mv "$OUT/part01" "$OUT/part2"
rm -rf "$OUT/site" "$OUT/wheels" "$OUT/fa4.tar.xz"
ls -l "$OUT"
