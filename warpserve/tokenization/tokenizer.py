"""`Tokenizer`: the one tokenizer interface the engine and the server use.

A thin wrapper over a Transformers fast tokenizer (Rust `tokenizers` underneath) that adds
what serving needs and Transformers spreads over several places: all the ids that end a
generation (tokenizer and generation_config), the usable context length, and clear errors
for chat requests to models without a chat template.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import jinja2
from transformers import AutoTokenizer, PreTrainedTokenizerFast

# Transformers' "no limit" model_max_length is ~1e30; anything this large means unknown.
_UNKNOWN_LENGTH = 10**9


class Tokenizer:
    def __init__(
        self,
        hf: PreTrainedTokenizerFast,
        generation_config: dict[str, Any] | None = None,
        max_model_len: int | None = None,
        name: str = "model",
    ) -> None:
        if not isinstance(hf, PreTrainedTokenizerFast):
            raise ValueError(f"{name}: a fast tokenizer (tokenizer.json) is needed, got {type(hf)}")
        self.hf = hf
        self.name = name
        # Decoding runs once or twice per generated token: straight to the Rust tokenizer
        # when Transformers would add nothing to its result (no space clean-up).
        rust = getattr(hf, "_tokenizer", None)
        clean_up = bool(getattr(hf, "clean_up_tokenization_spaces", False))
        self._rust_decode = None if rust is None or clean_up else rust.decode
        generation_config = generation_config or {}
        self.eos_token_ids: frozenset[int] = frozenset(
            _ids(hf.eos_token_id) | _ids(generation_config.get("eos_token_id"))
        )
        bos = hf.bos_token_id
        self.bos_token_id: int | None = (
            bos if bos is not None else generation_config.get("bos_token_id")
        )
        self.vocab_size: int = len(hf)  # includes added tokens
        self.max_model_len: int | None = _min_known(hf.model_max_length, max_model_len)

    @classmethod
    def from_folder(
        cls,
        folder: Path,
        generation_config: dict[str, Any] | None = None,
        max_model_len: int | None = None,
    ) -> Tokenizer:
        """Load tokenizer.json + tokenizer_config.json (chat template, special tokens)."""
        if not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"model folder {folder} has no tokenizer.json (warpserve needs a fast tokenizer)"
            )
        hf: Any = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        return cls(hf, generation_config, max_model_len, name=str(folder))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.hf.encode(text, add_special_tokens=add_special_tokens)

    def encode_batch(
        self, texts: Sequence[str], add_special_tokens: bool = True
    ) -> list[list[int]]:
        """Many texts at once; the Rust tokenizer spreads the batch over its threads."""
        batch = self.hf(list(texts), add_special_tokens=add_special_tokens)
        return batch["input_ids"]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        if self._rust_decode is not None:
            return cast(str, self._rust_decode(list(ids), skip_special_tokens=skip_special_tokens))
        return cast(str, self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return cast(list[str], self.hf.convert_ids_to_tokens(list(ids)))

    @property
    def has_chat_template(self) -> bool:
        return bool(self.hf.chat_template)

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render a chat as the prompt string; `kwargs` go to the template (e.g. `tools`)."""
        if not self.has_chat_template:
            raise ValueError(
                f"{self.name} has no chat template, so it cannot take chat messages: "
                "send a plain prompt (completions) instead"
            )
        try:
            prompt = self.hf.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
            )
        except jinja2.TemplateError as exc:  # the template rejected the messages (e.g. roles)
            raise ValueError(
                f"the chat template of {self.name} rejected the messages: {exc}"
            ) from exc
        return cast(str, prompt)

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size}, eos={sorted(self.eos_token_ids)})"


def _ids(value: int | Iterable[int] | None) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}


def _min_known(*lengths: int | None) -> int | None:
    known = [n for n in lengths if n is not None and 0 < n < _UNKNOWN_LENGTH]
    return min(known) if known else None
