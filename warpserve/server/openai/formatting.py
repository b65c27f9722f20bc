"""Engine outputs -> OpenAI JSON pieces: deltas, logprobs, usage, finish reasons."""

from __future__ import annotations

from dataclasses import dataclass

from warpserve.outputs import CompletionOutput, RequestOutput, TokenLogprob


def finish_reason(choice: CompletionOutput) -> str | None:
    if choice.finish_reason is None:
        return None
    return choice.finish_reason.value  # stop | length | abort


@dataclass
class ChoiceDelta:
    index: int  # the choice's OpenAI index (prompt-major for batch prompts)
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None
    text_offset: int  # characters of this choice's text before the delta
    finish_reason: str | None
    stop_reason: str | int | None


class DeltaTracker:
    """Cumulative outputs -> what is new since the previous output, per choice."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._text_len: dict[int, int] = {}
        self._num_tokens: dict[int, int] = {}

    def deltas(self, prompt_index: int, out: RequestOutput) -> list[ChoiceDelta]:
        result = []
        for choice in out.outputs:
            index = prompt_index * self._n + choice.index
            start = self._text_len.get(index, 0)
            first_token = self._num_tokens.get(index, 0)
            self._text_len[index] = len(choice.text)
            self._num_tokens[index] = len(choice.token_ids)
            delta = ChoiceDelta(
                index=index,
                text=choice.text[start:],
                token_ids=choice.token_ids[first_token:],
                logprobs=None if choice.logprobs is None else choice.logprobs[first_token:],
                text_offset=start,
                finish_reason=finish_reason(choice),
                stop_reason=choice.stop_reason,
            )
            if delta.text or delta.token_ids or delta.finish_reason:
                result.append(delta)
        return result


def completion_logprobs(logprobs: list[TokenLogprob], text_offset: int) -> dict[str, list]:
    """The legacy completions shape: parallel lists plus character offsets."""
    offsets, position = [], text_offset
    for entry in logprobs:
        offsets.append(position)
        position += len(entry.token)
    return {
        "tokens": [entry.token for entry in logprobs],
        "token_logprobs": [finite(entry.logprob) for entry in logprobs],
        "top_logprobs": [
            {text: finite(lp) for _, text, lp in entry.top_logprobs} for entry in logprobs
        ],
        "text_offset": offsets,
    }


def chat_logprobs(logprobs: list[TokenLogprob], num_top: int) -> dict[str, list]:
    return {
        "content": [
            {
                **_token(entry.token, entry.logprob),
                "top_logprobs": [_token(text, lp) for _, text, lp in entry.top_logprobs[:num_top]],
            }
            for entry in logprobs
        ]
    }


def _token(text: str, logprob: float) -> dict[str, object]:
    return {"token": text, "logprob": finite(logprob), "bytes": list(text.encode())}


def finite(logprob: float) -> float:
    """-inf (a token masked out) is not JSON; OpenAI clients expect a number."""
    return max(logprob, -9999.0)


def usage(outputs: list[RequestOutput]) -> dict[str, object]:
    prompt_tokens = sum(len(out.prompt_token_ids) for out in outputs)
    completion_tokens = sum(len(c.token_ids) for out in outputs for c in out.outputs)
    cached = sum(out.num_cached_tokens for out in outputs)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
