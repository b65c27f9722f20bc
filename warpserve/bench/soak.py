"""`warpserve bench soak`: a closed-loop mixed load that tries to take the server down.

`--concurrency` clients send, for `--duration` seconds, the mix of `soak_load.MIX`:
streaming and whole generations, batches with an invalid prompt among valid ones, hang-ups
(right after sending, after the first byte, mid-stream), slow readers, invalid parameters,
embeddings and rerank; /health and /metrics are polled at 1 Hz, and half way through the
engine is stalled for `--stall-s` (POST /debug/stall, which the server has only with
WARPSERVE_DEBUG_FAULTS=1; `--serve-cmd` sets it). Every `--sample-interval` seconds it
keeps the server's RSS, threads and open files (/proc/<pid>, for a local server) and its
in-flight and running requests, free KV blocks and event-loop lag (/metrics).

Pass (soak_report.evaluate): every answer is one its request may get; after the load
stops, in-flight, running and waiting requests and free KV blocks come back to their
values before it (threads and files within a small slack) within `--quiesce-s`; RSS grows
under 1 MB/min over the last half; event-loop lag p99 under 100 ms; /health 200 at the
end. Writes JSON (with the environment) and a PNG of RSS, latency and lag over time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import httpx

from warpserve.bench.report import environment, write_json
from warpserve.bench.soak_load import Prompts, Result, Server, run_one
from warpserve.bench.soak_report import (
    Sample,
    counters_ok,
    evaluate,
    latency_by_kind,
    markdown,
    parse_metrics,
    plot,
    read_proc,
    samples_json,
    status_table,
)

logger = logging.getLogger(__name__)
STALL_GRACE_S = 15.0  # /health may answer 503 this long after a stall ends


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server root")
    parser.add_argument(
        "--serve-cmd",
        default=None,
        help="start this server command (it must listen at --url) with "
        "WARPSERVE_DEBUG_FAULTS=1, soak it, then stop it with SIGTERM",
    )
    parser.add_argument("--pid", type=int, default=None, help="a running server's process id")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--model", default=None, help="default: the server's (GET /info)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop clients")
    parser.add_argument("--sample-interval", type=float, default=5.0, help="seconds")
    parser.add_argument("--stall-s", type=float, default=5.0, help="engine stall; 0: none")
    parser.add_argument("--stall-at", type=float, default=0.5, help="fraction of --duration")
    parser.add_argument("--quiesce-s", type=float, default=60.0, help="for counters to settle")
    parser.add_argument("--max-tokens", type=int, default=48, help="per generation, at most")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--startup-timeout", type=float, default=900.0, help="for --serve-cmd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="bench-soak.json", help="JSON report path")
    parser.add_argument("--plot", default=None, help="PNG path (default: next to the JSON)")


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    process = _start_server(args) if args.serve_cmd else None
    try:
        pid = process.pid if process is not None else args.pid
        report, results, samples = asyncio.run(soak(args, pid))
    finally:
        if process is not None:
            _stop_server(process)
    out = write_json(args.output, report)
    png = plot(report, results, samples, Path(args.plot) if args.plot else out.with_suffix(".png"))
    print(markdown(report))
    print(f"{'PASS' if report['passed'] else 'FAIL'}: wrote {out}" + (f" and {png}" if png else ""))
    return 0 if report["passed"] else 1


class Soak:
    """The state of one run: what was sent and answered, and what was sampled."""

    def __init__(self, args: argparse.Namespace, pid: int | None, server: Server) -> None:
        self.args = args
        self.pid = pid
        self.server = server
        self.prompts = Prompts(args.seed, server.max_prompt_words)
        self.t0 = time.perf_counter()
        self.results: list[Result] = []
        self.samples: list[Sample] = []
        self.health_latencies: list[float] = []
        self.events: list[dict[str, object]] = []
        self.stall_window: tuple[float, float] | None = None
        self.is_loading = asyncio.Event()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    async def sample(self, client: httpx.AsyncClient) -> Sample:
        sample = Sample(self.now())
        read_proc(self.pid, sample)
        try:
            response = await client.get("/metrics", headers=self.server.headers)
            parse_metrics(response.text, sample)
            status: int | str = response.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        self._record("metrics", sample.t_s, self.now() - sample.t_s, status, {200})
        return sample

    async def worker(self, client: httpx.AsyncClient) -> None:
        while self.is_loading.is_set():
            kind = self.prompts.kind()
            self.results.append(await run_one(client, self.server, kind, self.prompts, self.t0))

    async def watch(self, client: httpx.AsyncClient) -> None:
        """/metrics at 1 Hz (kept every --sample-interval), /health at 1 Hz beside it."""
        health = asyncio.create_task(self._poll_health(client))
        try:
            while True:
                sample = await self.sample(client)
                if sample.t_s - self.samples[-1].t_s >= self.args.sample_interval:
                    self.samples.append(sample)
                await asyncio.sleep(1.0)
        finally:
            health.cancel()

    async def _poll_health(self, client: httpx.AsyncClient) -> None:
        while True:
            started = self.now()
            try:
                status: int | str = (await client.get("/health")).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latency = self.now() - started
            self.health_latencies.append(latency)
            self._record("health", started, latency, status, self._health_ok(started))
            await asyncio.sleep(max(0.0, 1.0 - latency))

    def _health_ok(self, t_s: float) -> set[int]:
        window = self.stall_window
        in_stall = window is not None and window[0] <= t_s <= window[1] + STALL_GRACE_S
        return {200, 503} if in_stall else {200}

    async def stall(self, client: httpx.AsyncClient) -> None:
        await asyncio.sleep(self.args.stall_at * self.args.duration)
        started = self.now()
        seconds = self.args.stall_s
        response = await client.post(
            "/debug/stall", params={"seconds": seconds}, headers=self.server.headers
        )
        self.stall_window = (started, started + seconds)
        self.events.append(
            {"t_s": started, "what": f"engine stall {seconds:g} s", "status": response.status_code}
        )

    def _record(self, kind: str, t_s: float, latency: float, status: int | str, ok: set) -> None:
        self.results.append(Result(kind, t_s, latency, status, status in ok))


async def soak(
    args: argparse.Namespace, pid: int | None
) -> tuple[dict[str, object], list[Result], list[Sample]]:
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    async with httpx.AsyncClient(base_url=args.url, timeout=args.timeout, limits=limits) as client:
        state = Soak(args, pid, await _discover(client, args))
        await _warm_up(client, state)
        baseline = await state.sample(client)
        state.samples.append(baseline)
        load_start = state.now()
        logger.info("soak: %s s of load from %d clients", args.duration, args.concurrency)
        await _load(client, state)
        load_end = state.now()
        logger.info("soak: load over after %d requests; quiescing", len(state.results))
        final = await _quiesce(client, state, baseline)
        final_health = await _health_status(client)
    criteria = evaluate(
        state.results,
        state.samples,
        baseline,
        final,
        final_health,
        (load_start, load_end),
        state.health_latencies,
    )
    report = _report(args, state, criteria, (load_start, load_end))
    return report, state.results, state.samples


async def _load(client: httpx.AsyncClient, state: Soak) -> None:
    state.is_loading.set()
    workers = [asyncio.create_task(state.worker(client)) for _ in range(state.args.concurrency)]
    side = [asyncio.create_task(state.watch(client))]
    if state.args.stall_s > 0:
        side.append(asyncio.create_task(state.stall(client)))
    await asyncio.sleep(state.args.duration)
    state.is_loading.clear()  # each client finishes the request it is in
    await asyncio.gather(*workers)
    for task in side:
        task.cancel()
    await asyncio.gather(*side, return_exceptions=True)


async def _quiesce(client: httpx.AsyncClient, state: Soak, baseline: Sample) -> Sample:
    """Sample once a second until the counters are back (or --quiesce-s has passed)."""
    deadline = time.monotonic() + state.args.quiesce_s
    while True:
        final = await state.sample(client)
        state.samples.append(final)
        if counters_ok(baseline, final) or time.monotonic() > deadline:
            return final
        await asyncio.sleep(1.0)


async def _health_status(client: httpx.AsyncClient) -> int | str:
    try:
        return (await client.get("/health")).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def _discover(client: httpx.AsyncClient, args: argparse.Namespace) -> Server:
    info = (await client.get("/info", headers=_auth(args.api_key))).json()
    model = args.model or info.get("model_id")
    if not model:
        raise ValueError("model: the server reports no generative model; pass --model")
    embed_task = str(info.get("model_type", "")) if info.get("embedding_model_id") else ""
    # prompt + max_tokens within the context, counting 10 tokens a word (byte tokenizers)
    room = int(info.get("max_total_tokens", 8192)) - args.max_tokens
    max_words = max(4, min(120, room // 10))
    return Server(
        args.url, model, embed_task, args.api_key, args.max_tokens, args.timeout, max_words
    )


async def _warm_up(client: httpx.AsyncClient, state: Soak) -> None:
    """One request of each well-behaved kind, then a settle: first-use allocations (pool
    threads, caches) belong to the baseline, not to the load."""
    for kind in ("chat", "chat_stream", "completion", "batch", "invalid", "embed", "rerank"):
        await run_one(client, state.server, kind, state.prompts, state.t0)
    await asyncio.sleep(2.0)


def _report(
    args: argparse.Namespace, state: Soak, criteria: dict, window: tuple[float, float]
) -> dict[str, object]:
    load = [r for r in state.results if r.kind not in ("health", "metrics")]
    config = {k: v for k, v in vars(args).items() if k not in ("api_key", "func")}
    return {
        "benchmark": "soak",
        "target": {"url": args.url, "model": state.server.model, "pid": state.pid},
        "config": config,
        "load_window_s": list(window),
        "num_requests": len(load),
        "requests_per_s": len(load) / max(1e-9, window[1] - window[0]),
        "events": state.events,
        "stall_injected": any(e.get("status") == 200 for e in state.events),
        "passed": all(c["passed"] for c in criteria.values()),
        "criteria": criteria,
        "statuses": status_table(state.results),
        "latency_s": latency_by_kind(state.results),
        "samples": samples_json(state.samples),
        "environment": environment(),
    }


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _start_server(args: argparse.Namespace) -> subprocess.Popen:
    log_path = Path(args.output).with_suffix(".server.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"WARPSERVE_DEBUG_FAULTS": "1", "HF_HUB_OFFLINE": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            shlex.split(args.serve_cmd), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{args.url}/ready", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    _stop_server(process)
    raise RuntimeError(f"the server did not become ready; see {log_path}")


def _stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
