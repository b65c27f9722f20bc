"""How the HTTP server behaves: listening address, limits, keys, timeouts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _debug_faults_from_env() -> bool:
    return os.environ.get("WARPSERVE_DEBUG_FAULTS") == "1"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()  # empty: no authentication
    cors_origins: tuple[str, ...] = ()  # empty: no CORS headers; ("*",) allows any origin
    max_request_bytes: int = 4 * 1024 * 1024  # larger bodies get 413
    # Generation requests the server holds at once (tokenizing, waiting or running in the
    # engine); beyond this new ones get 429 before they reach the engine, whose own waiting
    # queue (SchedulerConfig.max_waiting) is the second bound.
    max_concurrent_requests: int = 1024
    retry_after_s: int = 1  # the Retry-After header of a 429
    request_timeout_s: float = 600.0  # a generation still running after this is aborted
    health_timeout_s: float = 10.0  # deadline of the /health one-token generation probe
    drain_timeout_s: float = 30.0  # on SIGTERM, how long in-flight requests may finish
    max_prompts_per_request: int = 64  # batch prompts of /v1/completions
    # Generation input limits (docs/RELIABILITY.md has the table with TGI/vLLM's names).
    # None: derived from the model's context (max_model_len).
    max_input_tokens: int | None = None  # prompt tokens; None: the context - 1
    max_total_tokens: int | None = None  # prompt + max_tokens; None: the context
    max_prompt_chars: int | None = None  # per prompt, before tokenizing; None: 250 x input
    max_sequences_per_request: int = 64  # n x prompts of one request
    max_stop_strings: int = 16
    max_stop_chars: int = 1024  # per stop string
    max_logit_bias: int = 300  # entries (OpenAI's limit)
    max_chat_messages: int = 1024
    # A streamed response whose client has not read for this long is dropped (and its
    # engine requests aborted): a reader that stopped cannot hold a slot for long.
    write_stall_timeout_s: float = 30.0
    # Encoder routes (/v1/embeddings, /embed, /rerank, /predict, the Inference API) and
    # /tokenize: characters are counted before tokenizing, so an oversized input costs no
    # tokenizer time. Each refusal is a 413 (Hugging Face routes, as TEI) or 400 (OpenAI)
    # naming the field; docs/RELIABILITY.md has the table.
    max_embedding_inputs: int = 2048  # texts per /v1/embeddings, /embed, /predict request
    max_rerank_texts: int = 256  # texts per /rerank request (each is tokenized with the query)
    max_input_chars: int = 128_000  # per text; TEI's max_input_length x 250 at 512 tokens
    max_rerank_query_chars: int = 4096  # the /rerank query (tokenized once per text)
    max_tokenize_chars: int = 65_536  # /tokenize inputs (one JSON object per token back)
    encoder_timeout_s: float = 60.0  # an encoder call still running after this gets 504
    # POST /debug/stall (server/debug.py), for `warpserve bench soak`: off unless set here
    # or WARPSERVE_DEBUG_FAULTS=1 is in the environment; never on a production server.
    enable_debug_faults: bool = field(default_factory=_debug_faults_from_env)
    served_model_name: str | None = None  # the name clients use; None: the engine's
    served_embedding_model_name: str | None = None  # None: the embedding service's

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be in [0, 65535] (0: any free port)")
        if any(not key for key in self.api_keys):
            raise ValueError("api_keys must be non-empty strings")
        _positive("max_request_bytes", self.max_request_bytes)
        _positive("max_concurrent_requests", self.max_concurrent_requests)
        _positive("retry_after_s", self.retry_after_s)
        _positive("request_timeout_s", self.request_timeout_s)
        _positive("health_timeout_s", self.health_timeout_s)
        _positive("max_prompts_per_request", self.max_prompts_per_request)
        for name in ("max_input_tokens", "max_total_tokens", "max_prompt_chars"):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value)
        _positive("max_sequences_per_request", self.max_sequences_per_request)
        _positive("max_stop_strings", self.max_stop_strings)
        _positive("max_stop_chars", self.max_stop_chars)
        _positive("max_logit_bias", self.max_logit_bias)
        _positive("max_chat_messages", self.max_chat_messages)
        _positive("write_stall_timeout_s", self.write_stall_timeout_s)
        _positive("max_embedding_inputs", self.max_embedding_inputs)
        _positive("max_rerank_texts", self.max_rerank_texts)
        _positive("max_input_chars", self.max_input_chars)
        _positive("max_rerank_query_chars", self.max_rerank_query_chars)
        _positive("max_tokenize_chars", self.max_tokenize_chars)
        _positive("encoder_timeout_s", self.encoder_timeout_s)
        if self.drain_timeout_s < 0:
            raise ValueError("drain_timeout_s must be >= 0, e.g. 30")


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be > 0")
