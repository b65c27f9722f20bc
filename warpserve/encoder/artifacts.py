"""Where built variants and reports live: a cache folder keyed by model and task.

    <cache>/encoders/<model>-<key>/<task>/report.json, report.md
    <cache>/encoders/<model>-<key>/<task>/<variant>/model.onnx

The key hashes the model folder's resolved path and its weight files' sizes and times,
so editing the weights rebuilds; RECIPE_VERSION changes when a recipe's output would.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from warpserve.encoder.models import EncoderSpec

RECIPE_VERSION = "3"
CACHE_ENV = "WARPSERVE_CACHE_DIR"


def cache_root() -> Path:
    """The one place the encoder reads the environment."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/warpserve").expanduser()


def model_dir(spec: EncoderSpec, root: Path | None = None) -> Path:
    """The task's folder for this model."""
    root = cache_root() if root is None else root
    digest = hashlib.sha256(_fingerprint(spec).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.path.name).strip("-") or "model"
    return root / "encoders" / f"{slug}-{digest}" / spec.task


def _fingerprint(spec: EncoderSpec) -> str:
    parts = [str(spec.path.resolve()), RECIPE_VERSION]
    for weights in sorted(spec.path.glob("*.safetensors")) + sorted(spec.path.glob("*.bin")):
        stat = weights.stat()
        parts.append(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def variant_path(spec: EncoderSpec, variant: str, root: Path | None = None) -> Path:
    return model_dir(spec, root) / variant / "model.onnx"


def report_path(spec: EncoderSpec, root: Path | None = None) -> Path:
    return model_dir(spec, root) / "report.json"


def read_report(spec: EncoderSpec, root: Path | None = None) -> dict | None:
    path = report_path(spec, root)
    return json.loads(path.read_text()) if path.exists() else None
