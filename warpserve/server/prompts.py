"""Prompts in: tokenization off the event loop, chat templates, context-length checks."""

from __future__ import annotations

import asyncio
from typing import TypeGuard, cast

from warpserve.request import SamplingParams
from warpserve.server.errors import APIError, bad_request, from_value_error
from warpserve.server.state import ServerState

# Below this many characters (well under a millisecond of BPE) a prompt is tokenized
# inline: the thread hop would cost more than it saves.
_INLINE_TOKENIZE_CHARS = 512


def context_limits(state: ServerState) -> tuple[int, int]:
    """(most prompt tokens, most prompt + generated tokens): the model's context, lowered
    by --max-input-tokens / --max-total-tokens."""
    max_model_len = state.require_engine(None).max_model_len
    config = state.config
    max_total = min(max_model_len, config.max_total_tokens or max_model_len)
    max_input = min(max_total - 1, config.max_input_tokens or max_total - 1)
    return max_input, max_total


def max_prompt_chars(state: ServerState) -> int:
    """Characters of one prompt before tokenizing: TEI's rule, 250 per allowed token."""
    return state.config.max_prompt_chars or 250 * context_limits(state)[0]


async def encode(
    state: ServerState, text: str, add_special_tokens: bool = True, param: str = "prompt"
) -> list[int]:
    """Tokenize long prompts on the server's one tokenizer thread: the event loop keeps
    streaming, and tokenization can take at most one core from the engine (docs/ARCHITECTURE.md).
    A text longer than max_prompt_chars is refused before any tokenizing."""
    limit = max_prompt_chars(state)
    if len(text) > limit:
        raise bad_request(
            f"{param} has {len(text)} characters, more than the {limit} allowed "
            "(--max-prompt-chars)",
            param=param,
            code="context_length_exceeded",
        )
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
    if len(texts) > state.config.max_prompts_per_request and not _is_token_list(prompt):
        limit = state.config.max_prompts_per_request
        raise bad_request(f"{param} holds more than {limit} prompts", param=param)
    if isinstance(prompt, str):
        prompts: list[list[int]] = [await encode(state, prompt, param=param)]
    elif _is_token_list(prompt):
        prompts = [list(prompt)]
    else:  # what is left: a list of texts or of token id lists
        prompts = [
            await encode(state, p, param=param) if isinstance(p, str) else list(p)
            for p in cast("list[str | list[int]]", prompt)
        ]
    if not prompts:
        raise bad_request(f"{param} must not be empty", param=param)
    vocab_size = state.require_engine(None).vocab_size
    for ids in prompts:
        if not ids:
            raise bad_request(f"{param} must not be empty", param=param)
        if not all(0 <= t < vocab_size for t in ids):
            raise bad_request(f"{param} token ids must be in [0, {vocab_size})", param=param)
    return prompts


def _is_token_list(prompt: object) -> TypeGuard[list[int]]:
    return isinstance(prompt, list) and bool(prompt) and all(isinstance(p, int) for p in prompt)


def check_request_size(state: ServerState, num_prompts: int, n: int, param: str = "n") -> None:
    """n choices of each of num_prompts prompts: each is a sequence in the engine."""
    limit = state.config.max_sequences_per_request
    if num_prompts * n > limit:
        raise bad_request(
            f"{param}: {num_prompts} prompts x n={n} is more than {limit} sequences per request",
            param=param,
        )


def check_stop(state: ServerState, stop: list[str], param: str = "stop") -> None:
    config = state.config
    if len(stop) > config.max_stop_strings:
        raise bad_request(f"{param} holds more than {config.max_stop_strings} strings", param=param)
    if any(len(s) > config.max_stop_chars for s in stop):
        limit = config.max_stop_chars
        raise bad_request(f"{param} strings must be at most {limit} characters", param=param)


def check_chat_messages(state: ServerState, num_messages: int) -> None:
    limit = state.config.max_chat_messages
    if num_messages > limit:
        raise bad_request(f"messages holds more than {limit} messages", param="messages")


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
    max_input, max_total = context_limits(state)
    longest = max(len(ids) for ids in prompts)
    if longest > max_input:
        raise bad_request(
            f"the prompt has {longest} tokens; at most {max_input} are allowed "
            f"(the context is {max_total} tokens)",
            param="prompt" if param == "max_tokens" else "messages",
            code="context_length_exceeded",
        )
    room = max_total - longest
    if requested is None:
        return room if default is None else min(default, room)
    if requested > room:
        raise bad_request(
            f"{param} is {requested} but the prompt has {longest} tokens and at most "
            f"{max_total} tokens are allowed in all: at most {room} new tokens fit",
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


def token_bias(state: ServerState, logit_bias: dict[str, float] | None) -> dict[int, float]:
    """OpenAI's logit_bias has token ids as JSON object keys (strings): decimal digits,
    each below the vocabulary size, at most max_logit_bias of them."""
    if not logit_bias:
        return {}
    limit = state.config.max_logit_bias
    if len(logit_bias) > limit:
        raise bad_request(f"logit_bias holds more than {limit} entries", param="logit_bias")
    vocab_size = state.require_engine(None).vocab_size
    if not all(token.isdecimal() and int(token) < vocab_size for token in logit_bias):
        raise bad_request(
            f"logit_bias keys must be token ids in [0, {vocab_size})", param="logit_bias"
        )
    return {int(token): float(bias) for token, bias in logit_bias.items()}
