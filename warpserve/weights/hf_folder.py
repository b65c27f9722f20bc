"""A Hugging Face model folder: config.json, safetensors shards, tokenizer files.

Shards are opened lazily, one at a time, through `safe_open` (a memory map), so peak memory
is one tensor plus the model being filled, not the whole checkpoint twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError, safe_open
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from warpserve.tokenization.tokenizer import Tokenizer
from warpserve.weights.source import ModelSource

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


@dataclass
class SafetensorsSource(ModelSource):
    shards: tuple[Path, ...] = field(default=())

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for shard in self.shards:
            with safe_open(shard, framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                    tensor = handle.get_tensor(name)
                    yield name, tensor.float() if tensor.is_floating_point() else tensor

    def load_tokenizer(self, cache_dir: Path | None = None) -> Tokenizer:
        del cache_dir  # nothing is converted for a folder
        return Tokenizer.from_folder(
            self.path, self.generation_config, self.max_position_embeddings
        )


def open_folder(folder: Path) -> SafetensorsSource:
    config = load_config(folder)
    shards = find_shards(folder)
    for shard in shards:
        check_shard(shard)
    return SafetensorsSource(folder, "safetensors", config, _generation_config(folder), shards)


def load_config(folder: Path) -> transformers.PretrainedConfig:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"model folder {folder} has no config.json: expected a Hugging Face model folder "
            "(config.json, *.safetensors, tokenizer.json) or a .gguf file"
        )
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{config_file} is not a usable model config: {exc}") from exc
    if not config.architectures:
        causal_lm = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
        if causal_lm is None:
            raise ValueError(
                f'{config_file} names no `architectures`; add one, e.g. ["LlamaForCausalLM"]'
            )
        config.architectures = [causal_lm]
    return config


def find_shards(folder: Path) -> tuple[Path, ...]:
    """The index's shards in order, else model.safetensors, else every *.safetensors."""
    index = folder / INDEX_FILE
    if index.is_file():
        return _shards_from_index(index)
    if (folder / SINGLE_FILE).is_file():
        return (folder / SINGLE_FILE,)
    shards = tuple(sorted(folder.glob("*.safetensors")))
    if not shards:
        raise FileNotFoundError(
            f"model folder {folder} has no *.safetensors weights "
            "(pytorch_model.bin is not read: re-save the model with safe_serialization)"
        )
    return shards


def _shards_from_index(index: Path) -> tuple[Path, ...]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{index} is not a valid safetensors index: {exc}") from exc
    shards = tuple(index.parent / name for name in dict.fromkeys(sorted(weight_map.values())))
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise FileNotFoundError(f"{index} lists shards that are missing: {', '.join(missing)}")
    return shards


def check_shard(shard: Path) -> None:
    """Read the shard's header now, so a truncated download fails at open, not mid-load."""
    try:
        with safe_open(shard, framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"safetensors file {shard} is truncated or corrupt: {exc}") from exc


def _generation_config(folder: Path) -> dict[str, Any]:
    path = folder / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
