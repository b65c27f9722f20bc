"""The soak's clients: one request of each kind the mix holds, and the statuses each may get.

Well-behaved requests go through httpx; the ones that misbehave at the socket level (hang
up right after sending, after the first byte, mid-stream; read slowly) use raw asyncio
streams, so the server sees exactly that and nothing a client library would smooth over.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

# kind -> weight in percent: 75 well-formed generation (streaming and not, batches with an
# invalid prompt among valid ones), 10 hang-ups, 5 slow readers, 5 invalid parameters,
# 5 embeddings and rerank.
MIX: dict[str, int] = {
    "chat_stream": 27,
    "chat": 15,
    "completion_stream": 12,
    "completion": 11,
    "batch": 5,
    "batch_mixed": 5,
    "hangup_after_send": 4,
    "hangup_first_byte": 3,
    "hangup_mid_stream": 3,
    "slow_reader": 5,
    "invalid": 5,
    "embed": 3,
    "rerank": 2,
}
HANGUPS = frozenset({"hangup_after_send", "hangup_first_byte", "hangup_mid_stream"})
_VALID = frozenset({200, 429})  # overloaded is a documented answer to valid work
_INVALID_BODIES: list[tuple[str, object, frozenset[int]]] = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, frozenset({400})),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, frozenset({400})),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}, frozenset({400})),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 0}, frozenset({400})),
    ("/v1/completions", b'{"prompt": "hi", "max_tokens": ', frozenset({400})),
    ("/v1/completions", {"prompt": "hi", "model": "no-such-model"}, frozenset({400})),
    ("/generate", {"inputs": "hi", "parameters": {"temperature": 0}}, frozenset({422})),
    ("/generate", {"inputs": "", "parameters": {"max_new_tokens": 4}}, frozenset({422})),
]  # fmt: skip


@dataclass(frozen=True)
class Result:
    kind: str
    started_s: float  # since the soak began
    latency_s: float
    status: int | str  # an HTTP status, or "hung_up", or the client-side error's name
    is_expected: bool
    detail: str = ""


@dataclass
class Server:
    """What the soak knows of its target; `embed_task` from /info ("" when none)."""

    url: str
    model: str
    embed_task: str
    api_key: str | None
    max_tokens: int
    timeout_s: float
    max_prompt_words: int = 120

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def expected(self, kind: str) -> frozenset[int]:
        if kind == "embed":
            return _VALID if self.embed_task == "embed" else frozenset({404})
        if kind == "rerank":
            return _VALID if self.embed_task == "rerank" else frozenset({404})
        if kind == "batch_mixed":
            return frozenset({400})
        return _VALID


class Prompts:
    """Seeded prompts of 4 to `max_words` words from a fixed vocabulary (no corpus to find);
    a word is at most 10 characters, so at most 10 tokens even for a byte tokenizer."""

    def __init__(self, seed: int, max_words: int = 120) -> None:
        self.rng = random.Random(seed)
        self.max_words = max_words
        letters = "abcdefghijklmnopqrstuvwxyz"
        self._vocab = [
            "".join(self.rng.choices(letters, k=self.rng.randint(2, 9))) for _ in range(3000)
        ]

    def text(self, low: int = 4, high: int = 120) -> str:
        high = min(high, self.max_words)
        return " ".join(self.rng.choices(self._vocab, k=self.rng.randint(min(low, high), high)))

    def kind(self) -> str:
        return self.rng.choices(list(MIX), weights=list(MIX.values()))[0]


async def run_one(
    client: httpx.AsyncClient, server: Server, kind: str, prompts: Prompts, t0: float
) -> Result:
    started = time.perf_counter()
    try:
        status, detail, is_expected = await _dispatch(client, server, kind, prompts)
    except (TimeoutError, httpx.HTTPError, OSError, ValueError) as exc:  # ValueError: bad JSON
        status, detail, is_expected = type(exc).__name__, str(exc)[:200], False
    return Result(kind, started - t0, time.perf_counter() - started, status, is_expected, detail)


async def _dispatch(
    client: httpx.AsyncClient, server: Server, kind: str, prompts: Prompts
) -> tuple[int | str, str, bool]:
    if kind in HANGUPS or kind == "slow_reader":
        return await _misbehave(server, kind, _chat_body(server, prompts, stream=True))
    if kind == "invalid":
        path, body, statuses = prompts.rng.choice(_INVALID_BODIES)
        response = await _post(client, server, path, body)
        return response.status_code, response.text[:120], response.status_code in statuses
    path, body = _request_for(server, kind, prompts)
    if body.get("stream"):
        return await _stream(client, server, path, body)
    response = await _post(client, server, path, body)
    problem = _problem(kind, body, response)
    is_expected = response.status_code in server.expected(kind) and not problem
    return response.status_code, problem, is_expected


def _request_for(server: Server, kind: str, prompts: Prompts) -> tuple[str, dict]:
    if kind in ("chat", "chat_stream"):
        return "/v1/chat/completions", _chat_body(server, prompts, kind == "chat_stream")
    if kind in ("completion", "completion_stream", "batch", "batch_mixed"):
        body = _sampling(server, prompts, stream=kind == "completion_stream")
        body["prompt"] = prompts.text()
        if kind == "batch":
            body["prompt"] = [prompts.text() for _ in range(prompts.rng.randint(2, 3))]
        if kind == "batch_mixed":  # all or nothing: one bad prompt refuses the batch
            bad = prompts.rng.choice(["", [10**9]])
            body["prompt"] = (
                [prompts.text(), bad, prompts.text()] if bad == "" else [[1, 2, 3], bad]
            )
        return "/v1/completions", body
    if kind == "embed":
        return "/v1/embeddings", {
            "input": [prompts.text(4, 60) for _ in range(prompts.rng.randint(1, 8))]
        }
    if kind == "rerank":
        return "/rerank", {
            "query": prompts.text(3, 12),
            "texts": [prompts.text(4, 60) for _ in range(4)],
        }
    raise ValueError(f"kind: unknown '{kind}'")


def _sampling(server: Server, prompts: Prompts, stream: bool) -> dict:
    body: dict[str, object] = {
        "model": server.model,
        "max_tokens": prompts.rng.randint(4, server.max_tokens),
        "stream": stream,
    }
    if prompts.rng.random() < 0.5:
        body |= {"temperature": 0.8, "top_p": 0.95, "seed": prompts.rng.randrange(1 << 30)}
    else:
        body["temperature"] = 0.0
    return body


def _chat_body(server: Server, prompts: Prompts, stream: bool) -> dict:
    return _sampling(server, prompts, stream) | {
        "messages": [{"role": "user", "content": prompts.text()}]
    }


async def _post(
    client: httpx.AsyncClient, server: Server, path: str, body: object
) -> httpx.Response:
    if isinstance(body, bytes):
        headers = {**server.headers, "content-type": "application/json"}
        return await client.post(path, content=body, headers=headers)
    return await client.post(path, json=body, headers=server.headers)


def _problem(kind: str, body: dict, response: httpx.Response) -> str:
    """What is wrong with a 200 answer's shape ("" when nothing is)."""
    if response.status_code != 200:
        return response.text[:120] if response.status_code >= 500 else ""
    data = response.json()
    if kind == "batch" and len(data.get("choices", ())) != len(body["prompt"]):
        return f"{len(data.get('choices', ()))} choices for {len(body['prompt'])} prompts"
    if kind == "embed" and len(data.get("data", ())) != len(body["input"]):
        return "an embedding missing"
    return ""


async def _stream(
    client: httpx.AsyncClient, server: Server, path: str, body: dict
) -> tuple[int | str, str, bool]:
    async with client.stream("POST", path, json=body, headers=server.headers) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, response.text[:120], response.status_code in _VALID
        is_done = False
        async for line in response.aiter_lines():
            is_done = is_done or line.strip() == "data: [DONE]"
    return 200, "" if is_done else "the stream ended without [DONE]", is_done


async def _misbehave(server: Server, kind: str, body: dict) -> tuple[int | str, str, bool]:
    """Raw socket: send the streaming request, then hang up or read slowly."""
    split = urlsplit(server.url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if kind == "slow_reader":  # a small window: the server's writes block on us
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (split.hostname, split.port or 80))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(
            _raw_request(
                split.hostname or "", split.path + "/v1/chat/completions", body, server.headers
            )
        )
        await writer.drain()
        if kind == "hangup_after_send":
            return "hung_up", "", True
        first = await asyncio.wait_for(reader.read(1), server.timeout_s)
        if kind == "hangup_first_byte":
            return "hung_up", first.decode(errors="replace"), True
        if kind == "hangup_mid_stream":
            return await _hang_up_mid_stream(reader, first, server.timeout_s)
        return await _read_slowly(reader, first, server.timeout_s)
    finally:
        writer.transport.abort()  # no FIN handshake: a client that vanished


def _raw_request(host: str, path: str, body: dict, headers: dict[str, str]) -> bytes:
    payload = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Connection: close",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _hang_up_mid_stream(
    reader: asyncio.StreamReader, data: bytes, timeout_s: float
) -> tuple[int | str, str, bool]:
    while data.count(b"data:") < 2:
        chunk = await asyncio.wait_for(reader.read(4096), timeout_s)
        if not chunk:  # the whole answer came before we could hang up
            return _status(data), "finished first", _status(data) in _VALID
        data += chunk
    return "hung_up", "", True


async def _read_slowly(
    reader: asyncio.StreamReader, data: bytes, timeout_s: float
) -> tuple[int | str, str, bool]:
    deadline = time.monotonic() + timeout_s
    while chunk := await asyncio.wait_for(reader.read(512), max(0.1, deadline - time.monotonic())):
        data += chunk
        await asyncio.sleep(0.05)  # ~10 KB/s
    status = _status(data)
    if status == 200 and b"[DONE]" not in data:
        return status, "the stream ended without [DONE]", False
    return status, "", status in _VALID


def _status(data: bytes) -> int | str:
    parts = data.split(b"\r\n", 1)[0].split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else "no_status_line"
