"""The sampler: one step's logits [B, V] -> one token per row.

The path of a row:
  1. processors (penalties, logit_bias, min_tokens) if the row asks for any;
  2. greedy rows (temperature 0) take the argmax, ties going to the lowest token id;
  3. random rows go through temperature, top-k, top-p and min-p (filters.py), then one
     inverse-CDF draw;
  4. logprobs, when asked, from the raw logits (logprobs.py).
A batch of plain greedy rows (no processors, no logprobs) is a single argmax.
Rows with a structured-output constraint (`params.structured`) first have every token
their grammar forbids set to -inf (grammar.py), in a copy; the rest of the path is the
same, so logprobs of a constrained row are those of the constrained distribution.

Randomness. A random row draws exactly one float64 uniform u per step from its own
torch.Generator (a CPU generator; rows without one share the sampler's default
generator, in row order) and takes the first token whose cumulative probability
exceeds u, in token-id order (draw.py). So a seeded row's token depends only on its own
logits and its own generator: never on which other rows share the batch. Greedy rows
draw nothing. Inverse-CDF rather than Gumbel/exponential-race noise because it needs
one random number per row instead of V: on CPU, generating V random numbers per row
cost more than the rest of sampling put together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from warpserve.sampling.draw import sample_from_logits
from warpserve.sampling.filters import apply_temperature, truncation_cutoffs
from warpserve.sampling.grammar import GrammarMasker
from warpserve.sampling.logprobs import compute_logprobs
from warpserve.sampling.processors import needs_processing, process_logits
from warpserve.sampling.types import SampledToken, SamplingRow


class Sampler:
    """Stateless across steps except for its default generator; one per model runner."""

    def __init__(
        self, vocab_size: int, eos_token_ids: Iterable[int], *, seed: int | None = None
    ) -> None:
        """eos_token_ids: masked while a row is below min_tokens. seed: of the default
        generator used by rows without their own (None: seeded from the OS)."""
        self.vocab_size = vocab_size
        self.eos_token_ids = frozenset(eos_token_ids)
        self.default_generator = torch.Generator()
        if seed is None:
            self.default_generator.seed()
        else:
            self.default_generator.manual_seed(seed)
        self.grammar = GrammarMasker(self.eos_token_ids)

    def release(self, request_id: str) -> None:
        """The request is finished: drop its grammar matcher, if it has one."""
        self.grammar.release(request_id)

    def __call__(self, logits: torch.Tensor, rows: Sequence[SamplingRow]) -> list[SampledToken]:
        """logits [B, V], row i for rows[i]; it is read, never modified."""
        assert logits.shape == (len(rows), self.vocab_size), (logits.shape, len(rows))
        logits = logits.float()  # a no-op for float32; half-precision logprobs are too coarse
        constrained = GrammarMasker.constrained_rows(rows)
        if constrained:
            logits = self.grammar.apply(logits, rows, constrained)  # a masked copy
        if all(_is_plain_greedy(row) and row.params.logprobs is None for row in rows):
            # torch.argmax returns the first maximal index: ties go to the lowest id.
            return [SampledToken(t, None, None) for t in logits.argmax(dim=-1).tolist()]
        token_ids = self._choose(logits, rows)  # [B]
        return self._outputs(logits, token_ids, rows)

    def _choose(self, logits: torch.Tensor, rows: Sequence[SamplingRow]) -> torch.Tensor:
        """Token ids [B] long: plain greedy rows straight from logits, the rest processed."""
        token_ids = torch.empty(len(rows), dtype=torch.long, device=logits.device)
        plain = [i for i, row in enumerate(rows) if _is_plain_greedy(row)]
        other = [i for i, row in enumerate(rows) if not _is_plain_greedy(row)]
        if plain:
            plain_logits = logits if len(plain) == len(rows) else _select(logits, plain)
            token_ids[plain] = plain_logits.argmax(dim=-1)
        if other:
            # index_select copies: the processors edit `work`, never the caller's logits.
            work = _select(logits, other)  # [r, V]
            token_ids[other] = self._process_and_pick(work, [rows[i] for i in other])
        return token_ids

    def _process_and_pick(self, work: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        """Token ids [r] for rows that need processing or a random draw; edits work [r, V]."""
        process_logits(work, rows, self.eos_token_ids)
        token_ids = torch.empty(len(rows), dtype=torch.long, device=work.device)
        greedy = [i for i, row in enumerate(rows) if row.params.is_greedy]
        random = [i for i, row in enumerate(rows) if not row.params.is_greedy]
        if greedy:
            token_ids[greedy] = _select(work, greedy).argmax(dim=-1)
        if random:
            random_logits = work if len(random) == len(rows) else _select(work, random)
            token_ids[random] = self._draw(random_logits, [rows[i] for i in random])
        return token_ids

    def _draw(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        """Token ids [s] drawn from the filtered distributions of logits [s, V] (edited)."""
        params = [row.params for row in rows]
        apply_temperature(logits, params)
        cutoff = truncation_cutoffs(logits, params)  # [s, 1]
        uniforms = [self._uniform(row.generator) for row in rows]
        u = torch.tensor(uniforms, dtype=torch.float64, device=logits.device)  # [s]
        return sample_from_logits(logits, u, cutoff)

    def _uniform(self, generator: torch.Generator | None) -> float:
        gen = self.default_generator if generator is None else generator
        return torch.rand((), generator=gen, dtype=torch.float64).item()

    def _outputs(
        self, logits: torch.Tensor, token_ids: torch.Tensor, rows: Sequence[SamplingRow]
    ) -> list[SampledToken]:
        ids = token_ids.tolist()
        outputs = [SampledToken(t, None, None) for t in ids]
        wanted = [i for i, row in enumerate(rows) if row.params.logprobs is not None]
        if not wanted:
            return outputs
        num_top = [rows[i].params.logprobs or 0 for i in wanted]
        if len(wanted) == len(rows):
            computed = compute_logprobs(logits, token_ids, num_top)
        else:
            index = torch.tensor(wanted, device=logits.device)
            chosen = token_ids.index_select(0, index)
            computed = compute_logprobs(logits.index_select(0, index), chosen, num_top)
        for i, (logprob, top) in zip(wanted, computed, strict=True):
            outputs[i] = SampledToken(ids[i], logprob, top)
        return outputs


def _is_plain_greedy(row: SamplingRow) -> bool:
    """Greedy and untouched by any processor: its token is the argmax of the raw logits."""
    return row.params.is_greedy and not needs_processing(row)


def _select(logits: torch.Tensor, index: list[int]) -> torch.Tensor:
    """A copy of rows `index` of logits [R, V]: [r, V]."""
    return logits.index_select(0, torch.tensor(index, device=logits.device))
