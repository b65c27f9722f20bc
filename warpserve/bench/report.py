"""Shared pieces of benchmark reports: percentiles and an environment stamp."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path


def percentiles(values: list[float], points: tuple[int, ...] = (50, 90, 99)) -> dict[str, float]:
    if not values:
        return {f"p{p}": float("nan") for p in points}
    ordered = sorted(values)
    result = {}
    for p in points:
        rank = (len(ordered) - 1) * p / 100
        lo = int(rank)
        hi = min(lo + 1, len(ordered) - 1)
        result[f"p{p}"] = ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)
    return result


def environment() -> dict[str, object]:
    import os

    import torch

    versions: dict[str, str | None] = {}
    for package in ("warpserve", "torch", "transformers", "onnxruntime", "tokenizers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "num_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_json(path: str | Path, payload: dict) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str))
    return out
