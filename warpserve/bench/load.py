"""An async load generator for any OpenAI-compatible server (ours, llama.cpp's, vLLM).

One `RequestResult` per request: time to first token, the gaps between streamed chunks,
end-to-end latency, token counts (from the server's usage when it reports them), or the
error. Load is either a fixed number of concurrent clients or Poisson arrivals at a rate.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class RequestSpec:
    prompt: str
    max_tokens: int


@dataclass(frozen=True)
class Target:
    url: str  # the server root, e.g. http://127.0.0.1:8000
    model: str
    endpoint: str = "completions"  # completions | chat
    stream: bool = True
    ignore_eos: bool = True  # a vLLM / llama.cpp / warpserve extension: exact output lengths
    temperature: float = 0.0
    api_key: str | None = None
    timeout_s: float = 300.0
    # token id -> bias, sent as OpenAI's logit_bias: -100 on the EOS id gives exact output
    # lengths on servers without ignore_eos (llama-cpp-python's ignores unknown fields)
    logit_bias: dict[str, float] | None = None

    def body(self, spec: RequestSpec) -> dict[str, object]:
        body: dict[str, object] = {
            "model": self.model,
            "max_tokens": spec.max_tokens,
            "temperature": self.temperature,
            "stream": self.stream,
        }
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.logit_bias:
            body["logit_bias"] = self.logit_bias
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": spec.prompt}]
        else:
            body["prompt"] = spec.prompt
        return body

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.endpoint == "chat" else "/v1/completions"


@dataclass
class RequestResult:
    start: float
    e2e_s: float = 0.0
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    output_tokens: int = 0
    error: str | None = None  # "http_429", "timeout", "connect", ...

    @property
    def ok(self) -> bool:
        return self.error is None


async def send(client: httpx.AsyncClient, target: Target, spec: RequestSpec) -> RequestResult:
    result = RequestResult(start=time.perf_counter())
    try:
        if target.stream:
            await _streamed(client, target, spec, result)
        else:
            await _whole(client, target, spec, result)
    except httpx.TimeoutException:
        result.error = "timeout"
    except httpx.TransportError as exc:
        result.error = f"transport_{type(exc).__name__}"
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        result.error = "bad_response"
    result.e2e_s = time.perf_counter() - result.start
    return result


async def _whole(
    client: httpx.AsyncClient, target: Target, spec: RequestSpec, result: RequestResult
) -> None:
    response = await client.post(target.path, json=target.body(spec))
    if response.status_code != 200:
        result.error = f"http_{response.status_code}"
        return
    usage = response.json().get("usage") or {}
    result.ttft_s = time.perf_counter() - result.start
    result.prompt_tokens = usage.get("prompt_tokens")
    result.output_tokens = int(usage.get("completion_tokens", 0))


async def _streamed(
    client: httpx.AsyncClient, target: Target, spec: RequestSpec, result: RequestResult
) -> None:
    num_chunks, last = 0, result.start
    usage: dict[str, int] = {}
    async with client.stream("POST", target.path, json=target.body(spec)) as response:
        if response.status_code != 200:
            await response.aread()
            result.error = f"http_{response.status_code}"
            return
        async for line in response.aiter_lines():
            data = line[5:].strip() if line.startswith("data:") else ""
            if not data or data == "[DONE]":
                continue
            chunk = json.loads(data)
            if chunk.get("error"):
                result.error = "stream_error"
                return
            usage = chunk.get("usage") or usage
            if _chunk_text(chunk):
                now = time.perf_counter()
                if result.ttft_s is None:
                    result.ttft_s = now - result.start
                else:
                    result.itl_s.append(now - last)
                last, num_chunks = now, num_chunks + 1
    result.prompt_tokens = usage.get("prompt_tokens")
    result.output_tokens = int(usage.get("completion_tokens", num_chunks))


def _chunk_text(chunk: dict) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    if "delta" in choice:
        return choice["delta"].get("content") or ""
    return choice.get("text") or ""


def client_for(target: Target, max_connections: int) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(
        base_url=target.url, headers=headers, timeout=target.timeout_s, limits=limits
    )


async def run_concurrency(
    target: Target, specs: list[RequestSpec], concurrency: int
) -> list[RequestResult]:
    """`concurrency` clients, each sending its next request as soon as the last finished."""
    pending = list(reversed(specs))
    results: list[RequestResult] = []
    async with client_for(target, concurrency) as client:

        async def worker() -> None:
            while pending:
                results.append(await send(client, target, pending.pop()))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def run_rate(
    target: Target, specs: list[RequestSpec], rate: float, seed: int
) -> list[RequestResult]:
    """Poisson arrivals: exponential gaps with mean 1/rate seconds, seeded."""
    rng = random.Random(seed)
    tasks = []
    async with client_for(target, max(1, len(specs))) as client:
        for spec in specs:
            tasks.append(asyncio.create_task(send(client, target, spec)))
            await asyncio.sleep(rng.expovariate(rate))
        return list(await asyncio.gather(*tasks))


async def first_model(url: str, api_key: str | None) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        response = await client.get("/v1/models")
        response.raise_for_status()
        return response.json()["data"][0]["id"]
