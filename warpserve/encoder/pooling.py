"""Sentence-transformers pooling: read 1_Pooling/config.json, pool token states in torch.

The pooling runs inside the exported ONNX graph too, so one function serves both paths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

POOLING_MODES = ("mean", "cls", "max", "lasttoken")
# 1_Pooling/config.json flag -> our mode name
_CONFIG_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class PoolingConfig:
    mode: str = "mean"

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise ValueError(f"pooling mode must be one of {', '.join(POOLING_MODES)}")


def read_pooling_config(model_dir: Path) -> PoolingConfig:
    """The first enabled mode of 1_Pooling/config.json; mean pooling when there is none."""
    path = _pooling_config_path(model_dir)
    if path is None:
        return PoolingConfig("mean")
    flags = json.loads(path.read_text())
    enabled = [mode for flag, mode in _CONFIG_FLAGS.items() if flags.get(flag)]
    if flags.get("pooling_mode_mean_sqrt_len_tokens"):
        raise ValueError(f"{path}: mean_sqrt_len pooling is not supported")
    if len(enabled) > 1:
        raise ValueError(f"{path}: one pooling mode at a time, found {', '.join(enabled)}")
    return PoolingConfig(enabled[0] if enabled else "mean")


def _pooling_config_path(model_dir: Path) -> Path | None:
    modules_path = model_dir / "modules.json"
    if modules_path.exists():
        for module in json.loads(modules_path.read_text()):
            if module.get("type", "").endswith(".Pooling"):
                return model_dir / module.get("path", "") / "config.json"
    fallback = model_dir / "1_Pooling" / "config.json"
    return fallback if fallback.exists() else None


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """hidden [B, S, H], attention_mask [B, S] (1 = token, right padding) -> [B, H]."""
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, S, 1]
    if mode == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if mode == "max":
        # padding must never win the max, whatever the sign of the real values
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
    if mode == "lasttoken":
        last = (attention_mask.sum(1) - 1).clamp(min=0)  # [B]
        index = last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])  # [B, 1, H]
        return hidden.gather(1, index).squeeze(1)
    raise ValueError(f"unknown pooling mode '{mode}'")
