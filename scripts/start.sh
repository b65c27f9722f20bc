#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and starts the server on the bundled default models
# (SmolLM2-135M-Instruct for generation, all-MiniLM-L6-v2 for embeddings).
# Extra arguments go to `warpserve serve`, e.g. `scripts/start.sh --port 8080`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/warpserve serve "$@"
