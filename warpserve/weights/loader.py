"""`open_model_source`: a model name or path -> a `ModelSource`, whatever the file format."""

from __future__ import annotations

from pathlib import Path

from warpserve.weights.gguf_file import GGUF_MAGIC
from warpserve.weights.gguf_source import GGUFSource, RawTensor, open_gguf
from warpserve.weights.hf_folder import SafetensorsSource, open_folder
from warpserve.weights.registry import resolve_model_path
from warpserve.weights.source import ModelSource

__all__ = ["GGUFSource", "ModelSource", "RawTensor", "SafetensorsSource", "open_model_source"]


def open_model_source(name_or_path: str) -> ModelSource:
    """A bundled short name, a local HF folder or a local .gguf file, opened and checked.

    Opening reads configs and file headers only; tensors are read by `iter_tensors`.
    """
    path = resolve_model_path(name_or_path).resolve()
    if path.is_dir():
        return open_folder(path)
    if path.suffix.lower() == ".gguf" or _starts_with_gguf_magic(path):
        return open_gguf(path)
    raise ValueError(
        f"{path} is neither a model folder nor a .gguf file "
        "(for safetensors, pass the folder that holds config.json)"
    )


def _starts_with_gguf_magic(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == GGUF_MAGIC
