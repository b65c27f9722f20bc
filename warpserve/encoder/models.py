"""BERT-family encoders from a local folder: what the model is (`EncoderSpec`) and the fp32
PyTorch module every optimized variant is exported from and validated against."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from warpserve.encoder.config import check_task
from warpserve.encoder.pooling import PoolingConfig, pool, read_pooling_config
from warpserve.weights.registry import resolve_model_path

# model_type -> the onnxruntime.transformers optimizer's name for its fusion patterns
FUSION_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "distilbert": "bert",
    "mpnet": "bert",
    "electra": "bert",
}
# RoBERTa-style embeddings reserve position ids 0..pad_token_id for padding
_POSITION_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert"}


@dataclass(frozen=True)
class EncoderSpec:
    """Everything the export, the sessions and the service need to know about a model."""

    name: str  # what the user passed (a bundled short name or a folder)
    path: Path
    task: str  # embed | classify | rerank
    model_type: str
    num_heads: int
    hidden_size: int
    max_input_tokens: int  # longest tokenized input, special tokens included
    pooling: PoolingConfig  # embed only
    has_normalize: bool  # the sentence-transformers pipeline ends in Normalize
    labels: tuple[str, ...]  # classify / rerank: output index -> label
    uses_token_type_ids: bool  # fed to the model (pairs need them for BERT cross-encoders)

    @property
    def input_names(self) -> tuple[str, ...]:
        base = ("input_ids", "attention_mask")
        return (*base, "token_type_ids") if self.uses_token_type_ids else base


def load_spec(name: str, task: str = "embed") -> EncoderSpec:
    """task "auto": rerank for a one-logit classification head, classify for a wider one,
    embed for a bare encoder."""
    path = resolve_model_path(name)
    config = _read_json(path / "config.json")
    if not isinstance(config, dict):
        raise ValueError(f"{path} has no config.json: not a Hugging Face model folder")
    task = check_task(_infer_task(config) if task == "auto" else task)
    labels = _labels(config, task, path)
    model_type = str(config.get("model_type", "bert"))
    return EncoderSpec(
        name=name,
        path=path,
        task=task,
        model_type=model_type,
        num_heads=int(config.get("num_attention_heads", config.get("n_heads", 12))),
        hidden_size=int(config.get("hidden_size", config.get("dim", 768))),
        max_input_tokens=_max_input_tokens(path, config, model_type),
        pooling=read_pooling_config(path) if task == "embed" else PoolingConfig(),
        has_normalize=_has_normalize(path),
        labels=labels,
        uses_token_type_ids=task != "embed" and int(config.get("type_vocab_size", 0)) >= 2,
    )


def _infer_task(config: dict) -> str:
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        return "embed"
    return "rerank" if len(config.get("id2label") or {"0": ""}) == 1 else "classify"


def _labels(config: dict, task: str, path: Path) -> tuple[str, ...]:
    if task == "embed":
        return ()
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(
            f"{path} has no sequence-classification head (architectures: {architectures}); "
            f"task '{task}' needs one: use task 'embed' or a cross-encoder / classifier"
        )
    id2label = config.get("id2label") or {"0": "LABEL_0"}
    return tuple(str(id2label[key]) for key in sorted(id2label, key=int))


def _max_input_tokens(path: Path, config: dict, model_type: str) -> int:
    offset = 2 if model_type in _POSITION_OFFSET_TYPES else 0
    limit = int(config.get("max_position_embeddings", 512)) - offset
    st_config = _read_json_object(path / "sentence_bert_config.json")
    tokenizer_config = _read_json_object(path / "tokenizer_config.json")
    for declared in (st_config.get("max_seq_length"), tokenizer_config.get("model_max_length")):
        if isinstance(declared, int) and 0 < declared < limit:
            return declared
    return limit


def _has_normalize(path: Path) -> bool:
    modules = _read_json(path / "modules.json") or []
    return any(str(m.get("type", "")).endswith(".Normalize") for m in modules)


def _read_json(path: Path) -> dict | list | None:
    return json.loads(path.read_text()) if path.exists() else None


def _read_json_object(path: Path) -> dict:
    """A JSON file that holds an object; {} when it is absent or holds something else."""
    value = _read_json(path)
    return value if isinstance(value, dict) else {}


class EncoderModule(nn.Module):
    """(input_ids, attention_mask[, token_type_ids]) -> pooled embeddings [B, H] (embed)
    or logits [B, num_labels] (classify, rerank). Unnormalized: callers normalize."""

    def __init__(self, backbone: nn.Module, spec: EncoderSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.task = spec.task
        self.pooling_mode = spec.pooling.mode

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        outputs = self.backbone(**kwargs)
        if self.task != "embed":
            return outputs.logits
        return pool(outputs.last_hidden_state, attention_mask, self.pooling_mode)


def load_torch_encoder(spec: EncoderSpec, attn_implementation: str = "sdpa") -> EncoderModule:
    """fp32, eval mode. Export wants "eager": its attention graph is the one the ONNX
    Runtime fusions recognize; serving wants "sdpa"."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    loader = AutoModel if spec.task == "embed" else AutoModelForSequenceClassification
    backbone = loader.from_pretrained(
        spec.path, attn_implementation=attn_implementation, dtype=torch.float32
    )
    return EncoderModule(backbone, spec).eval()
