"""Prompt lookup: propose the tokens that followed the latest earlier occurrence of the
sequence's last n tokens (n from ngram_max down to ngram_min). No model, no K/V.

It pays on input-grounded requests (rewrite, extract, edit code): the output copies runs
of the prompt, so once a copied run starts, its continuation is in the prompt. Each
request keeps an index from n-gram to the position after its latest occurrence, updated
incrementally, so a step costs O(ngram sizes) per request whatever the length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from warpserve.scheduler.output import DraftCandidate
from warpserve.spec_decode.types import Proposal


class NgramIndex:
    """n-gram (as a tuple, one length per n) -> index of the token that followed its
    latest occurrence, over the tokens seen so far."""

    def __init__(self, min_n: int, max_n: int) -> None:
        self.min_n = min_n
        self.max_n = max_n
        self._next_index: dict[tuple[int, ...], int] = {}
        self._num_indexed = 0  # tokens [0, _num_indexed) have their preceding n-grams indexed

    def update(self, token_ids: Sequence[int]) -> None:
        for index in range(self._num_indexed, len(token_ids)):
            for n in range(self.min_n, min(self.max_n, index) + 1):
                self._next_index[tuple(token_ids[index - n : index])] = index
        self._num_indexed = len(token_ids)

    def lookup(self, token_ids: Sequence[int], max_num_tokens: int) -> list[int]:
        """The continuation of the longest suffix seen before, at most max_num_tokens."""
        self.update(token_ids)
        for n in range(min(self.max_n, len(token_ids) - 1), self.min_n - 1, -1):
            index = self._next_index.get(tuple(token_ids[-n:]))
            if index is not None:
                return list(token_ids[index : index + max_num_tokens])
        return []


class NgramProposer:
    name = "ngram"
    draft_cost_s = 0.0  # a dict lookup: nothing next to a forward pass

    def __init__(self, min_n: int, max_n: int) -> None:
        self.min_n = min_n
        self.max_n = max_n
        self._indexes: dict[str, NgramIndex] = {}

    def propose(
        self,
        candidates: Sequence[DraftCandidate],
        num_drafts: Mapping[str, int],
        generators: Mapping[str, torch.Generator],
    ) -> dict[str, Proposal]:
        proposals = {}
        for candidate in candidates:
            num = num_drafts.get(candidate.request_id, 0)
            if num <= 0:
                continue
            index = self._indexes.get(candidate.request_id)
            if index is None:
                index = self._indexes[candidate.request_id] = NgramIndex(self.min_n, self.max_n)
            token_ids = index.lookup(candidate.token_ids, num)
            if token_ids:
                proposals[candidate.request_id] = Proposal(token_ids)
        return proposals

    def reset(self, request_id: str) -> None:
        """Nothing to do: the index is over token ids, which a preemption keeps."""

    def release(self, request_id: str) -> None:
        self._indexes.pop(request_id, None)
