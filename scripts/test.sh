#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs lint, format check, type check and the test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check warpserve tests
.venv/bin/ruff format --check warpserve tests
.venv/bin/mypy warpserve/kv_cache warpserve/scheduler warpserve/config.py warpserve/request.py
.venv/bin/python -m pytest -q "$@"
