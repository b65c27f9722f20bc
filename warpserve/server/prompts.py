"""Prompts in: tokenization off the event loop, chat templates, context-length checks."""

from __future__ import annotations

import asyncio

from warpserve.request import SamplingParams
from warpserve.server.errors import APIError, bad_request, from_value_error
from warpserve.server.state import ServerState

# Below this many characters (well under a millisecond of BPE) a prompt is tokenized
# inline: the thread hop would cost more than it saves.
_INLINE_TOKENIZE_CHARS = 512


async def encode(state: ServerState, text: str, add_special_tokens: bool = True) -> list[int]:
    """Tokenize long prompts on the server's one tokenizer thread: the event loop keeps
    streaming, and tokenization can take at most one core from the engine (docs/ARCHITECTURE.md)."""
    tokenizer = state.tokenizer()
    if len(text) <= _INLINE_TOKENIZE_CHARS:
        return tokenizer.encode(text, add_special_tokens=add_special_tokens)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        state.tokenizer_pool, tokenizer.encode, text, add_special_tokens
    )


async def encode_prompts(
    state: ServerState, prompt: str | list[str] | list[int] | list[list[int]], param: str
) -> list[list[int]]:
    """Normalize OpenAI's four prompt forms to a list of token id lists."""
    texts = [prompt] if isinstance(prompt, str) else prompt
    if any(isinstance(text, str) and not text for text in texts):
        raise bad_request(f"{param} must not be empty", param=param)
    if isinstance(prompt, str):
        prompts: list[list[int]] = [await encode(state, prompt)]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [list(prompt)]  # type: ignore[arg-type]
    else:
        prompts = [await encode(state, p) if isinstance(p, str) else list(p) for p in prompt]  # type: ignore[union-attr]
    if not prompts:
        raise bad_request(f"{param} must not be empty", param=param)
    if len(prompts) > state.config.max_prompts_per_request:
        limit = state.config.max_prompts_per_request
        raise bad_request(f"{param} holds more than {limit} prompts", param=param)
    for ids in prompts:
        if not ids:
            raise bad_request(f"{param} must not be empty", param=param)
    return prompts


async def encode_chat(state: ServerState, messages: list[dict[str, str]]) -> list[int]:
    tokenizer = state.tokenizer()
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    except ValueError as exc:  # e.g. a template that rejects the order of roles
        raise bad_request(f"messages: {exc}", param="messages") from None
    # The template already wrote any BOS it wants; adding special tokens would double it.
    return await encode(state, text, add_special_tokens=False)


def fit_max_tokens(
    state: ServerState,
    prompts: list[list[int]],
    requested: int | None,
    default: int | None,
    param: str,
) -> int:
    """The max_tokens to use: the request's, checked against the context, or the default.

    `default=None` means "whatever room the context leaves" (chat); OpenAI's completions
    default is 16.
    """
    max_model_len = state.require_engine(None).max_model_len
    longest = max(len(ids) for ids in prompts)
    room = max_model_len - longest
    if room < 1:
        raise bad_request(
            f"the prompt has {longest} tokens; the model's context is {max_model_len}",
            param="prompt" if param == "max_tokens" else "messages",
            code="context_length_exceeded",
        )
    if requested is None:
        return room if default is None else min(default, room)
    if requested > room:
        raise bad_request(
            f"{param} is {requested} but the prompt has {longest} tokens and the model's "
            f"context is {max_model_len}: at most {room} new tokens fit",
            param=param,
            code="context_length_exceeded",
        )
    return requested


def make_params(renames: dict[str, str], **kwargs: object) -> SamplingParams:
    """SamplingParams, with its ValueError turned into a 400 naming the API's field."""
    try:
        return SamplingParams(**kwargs)  # type: ignore[arg-type]
    except ValueError as exc:
        raise from_value_error(exc, renames) from None
    except TypeError as exc:  # a wrong type that slipped past the schema
        raise APIError(400, f"invalid sampling parameters: {exc}") from None


def token_bias(logit_bias: dict[str, float] | None) -> dict[int, float]:
    """OpenAI's logit_bias has token ids as JSON object keys (strings)."""
    if not logit_bias:
        return {}
    try:
        return {int(token): float(bias) for token, bias in logit_bias.items()}
    except ValueError:
        raise bad_request("logit_bias keys must be token ids", param="logit_bias") from None
