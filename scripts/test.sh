#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs lint, format check, type check and the test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# No HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE here: either one also stops huggingface_hub's
# InferenceClient from reaching the loopback test server. Nothing loads from a hub anyway:
# every model in the tests is a local folder or file.
export TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check warpserve tests
.venv/bin/ruff format --check warpserve tests
.venv/bin/mypy warpserve
.venv/bin/python -m pytest -q "$@"
