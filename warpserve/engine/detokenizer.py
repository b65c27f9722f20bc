"""Incremental detokenization with stop strings.

Text is decoded from a small window of tokens each step (the prefix/read offset method),
so a character split across tokens (UTF-8 bytes in a byte-level BPE) appears only once
its last byte arrives. While the sequence runs, the last max(len(stop)) - 1 characters
are held back (they could still begin a stop string), so streamed text never has to be
taken back. Each step costs O(new text + longest stop string) per stop string, never
O(text): the search starts where a stop string could first end.
"""

from __future__ import annotations

from collections.abc import Sequence

from warpserve.tokenization.tokenizer import Tokenizer

# Prompt tokens decoded before the first output token, so that tokenizers whose pieces
# depend on what precedes them (a leading-space marker) decode the first token right.
_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(
        self,
        tokenizer: Tokenizer,
        prompt_token_ids: Sequence[int],
        *,
        skip_special_tokens: bool = True,
        stop: Sequence[str] = (),
        include_stop_str_in_output: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.stop = list(stop)
        # A running sequence never shows its last max(len(stop)) - 1 characters.
        self.held_back = max((len(s) for s in self.stop), default=1) - 1
        self.include_stop = include_stop_str_in_output
        self.ids = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.text = ""  # everything decoded so far, cut at a stop string if one was found
        self.stop_reason: str | None = None

    def add_token(self, token_id: int) -> str | None:
        """Append one token; returns the stop string if the text now contains one."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return None  # an incomplete character: wait for more bytes
        old_len = len(self.text)
        self.text += full[len(prefix) :]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return self._find_stop(old_len)

    def visible_text(self, finished: bool) -> str:
        """The text safe to show: while running, hold back a possible stop-string prefix."""
        if self.stop_reason is not None:
            return self.text
        if finished:  # bytes of an incomplete character are shown as U+FFFD at the end
            return self.text + self._pending()
        if not self.held_back:
            return self.text
        return self.text[: max(0, len(self.text) - self.held_back)]

    def _pending(self) -> str:
        if self.read_offset == len(self.ids):
            return ""
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        return self._decode(self.ids[self.prefix_offset :])[len(prefix) :]

    def _find_stop(self, old_len: int) -> str | None:
        for stop in self.stop:
            start = max(0, old_len - len(stop) + 1)
            idx = self.text.find(stop, start)
            if idx >= 0:
                end = idx + len(stop) if self.include_stop else idx
                self.text = self.text[:end]
                self.stop_reason = stop
                return stop
        return None

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)
