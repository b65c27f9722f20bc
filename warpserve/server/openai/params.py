"""OpenAI request fields -> SamplingParams, shared by completions and chat completions."""

from __future__ import annotations

from warpserve.request import SamplingParams
from warpserve.server.errors import bad_request
from warpserve.server.openai.schemas import SamplingFields
from warpserve.server.prompts import check_stop, make_params, token_bias
from warpserve.server.state import ServerState


def sampling_params(
    state: ServerState, body: SamplingFields, max_tokens: int, logprobs: int | None
) -> SamplingParams:
    """The fields both OpenAI generation routes share -> SamplingParams, within the
    server's limits."""
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    check_stop(state, stop)
    return make_params(
        {},
        n=body.n,
        max_tokens=max_tokens,
        min_tokens=body.min_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k if body.top_k and body.top_k > 0 else None,
        min_p=body.min_p or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=token_bias(state, body.logit_bias),
        seed=body.seed,
        stop=stop,
        stop_token_ids=list(body.stop_token_ids or []),
        ignore_eos=body.ignore_eos,
        logprobs=logprobs,
        skip_special_tokens=body.skip_special_tokens,
    )


def check_stream_options(body: SamplingFields) -> None:
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options needs stream: true", param="stream_options")
