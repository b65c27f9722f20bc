"""Prometheus metrics, named after vLLM's with the `warpserve:` prefix.

Latency histograms are observed by the server as outputs arrive; the engine's own state
(running, waiting, KV cache, prefix cache, preemptions) is read from `EngineClient.stats()`
at scrape time, so the engine loop never touches Prometheus objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from warpserve.engine.protocol import EngineClient, EngineDeadError

_Buckets = tuple[float, ...]  # histogram bounds, seconds
_TTFT_BUCKETS: _Buckets = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0)
_TTFT_BUCKETS += (2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0)
_ITL_BUCKETS: _Buckets = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75)
_ITL_BUCKETS += (1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_E2E_BUCKETS: _Buckets = (0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0)
_E2E_BUCKETS += (40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_PERIOD_S = 0.1  # how often the event-loop lag is sampled
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    """One registry per app, so that several apps (tests) never share counters."""

    def __init__(self, engine: EngineClient | None, model_name: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        reg = self.registry
        self.ttft = Histogram(
            "warpserve:time_to_first_token_seconds",
            "Arrival to first generated token.",
            labels,
            buckets=_TTFT_BUCKETS,
            registry=reg,
        ).labels(model_name)
        self.itl = Histogram(
            "warpserve:inter_token_latency_seconds",
            "Time between consecutive generated tokens.",
            labels,
            buckets=_ITL_BUCKETS,
            registry=reg,
        ).labels(model_name)
        self.e2e = Histogram(
            "warpserve:e2e_request_latency_seconds",
            "Arrival to last token.",
            labels,
            buckets=_E2E_BUCKETS,
            registry=reg,
        ).labels(model_name)
        self.queue_time = Histogram(
            "warpserve:request_queue_time_seconds",
            "Arrival to first scheduled in the engine.",
            labels,
            buckets=_TTFT_BUCKETS,
            registry=reg,
        ).labels(model_name)
        self.prompt_tokens = Counter(
            "warpserve:prompt_tokens", "Prompt tokens processed.", labels, registry=reg
        ).labels(model_name)
        self.generation_tokens = Counter(
            "warpserve:generation_tokens", "Tokens generated.", labels, registry=reg
        ).labels(model_name)
        self._success = Counter(
            "warpserve:request_success",
            "Finished requests by finish reason.",
            [*labels, "finished_reason"],
            registry=reg,
        )
        self._rejected = Counter(
            "warpserve:request_rejected",
            "Requests refused before generation, by reason.",
            [*labels, "reason"],
            registry=reg,
        )
        self.event_loop_lag = Gauge(
            "warpserve:event_loop_lag_seconds",
            f"How late the event loop ran a {LAG_PERIOD_S} s timer, latest sample.",
            registry=reg,
        )
        self.event_loop_lag_distribution = Histogram(
            "warpserve:event_loop_lag_distribution_seconds",
            f"How late the event loop ran a {LAG_PERIOD_S} s timer, every sample.",
            buckets=_LAG_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge(
            "warpserve:num_requests_in_flight",
            "HTTP requests holding a concurrency ticket (generation, encoder, tokenize).",
            registry=reg,
        )
        self._model_name = model_name
        if engine is not None:
            reg.register(EngineStatsCollector(engine, model_name))

    def finished(self, reason: str) -> None:
        self._success.labels(self._model_name, reason).inc()

    def rejected(self, reason: str) -> None:
        self._rejected.labels(self._model_name, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def watch_event_loop_lag(self) -> None:
        """Runs on the server's loop until cancelled: a blocked loop (a tokenizer, a JSON
        encoder or a lock on it) shows as a late timer, before clients see it as latency."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_PERIOD_S)
            lag = max(0.0, loop.time() - started - LAG_PERIOD_S)
            self.event_loop_lag.set(lag)
            self.event_loop_lag_distribution.observe(lag)


class EngineStatsCollector(Collector):
    def __init__(self, engine: EngineClient, model_name: str) -> None:
        self._engine = engine
        self._model_name = model_name

    def collect(self) -> Iterator[Metric]:
        liveness = self._engine.liveness()
        yield self._family(
            GaugeMetricFamily,
            "engine_alive",
            "1 while the engine loop runs, 0 while it is down.",
            float(liveness.is_alive),
        )
        yield self._family(
            CounterMetricFamily,
            "engine_restarts",
            "Times the supervisor restarted a dead engine loop.",
            liveness.num_restarts,
        )
        try:
            stats = self._engine.stats()
        except EngineDeadError:
            return
        queries = stats.prefix_cache_queries
        hit_rate = stats.prefix_cache_hits / queries if queries else 0.0
        gauges = {
            "num_requests_running": ("Requests in the running batch.", stats.num_running),
            "num_requests_waiting": ("Requests waiting to be scheduled.", stats.num_waiting),
            "kv_cache_usage_perc": ("Fraction of KV blocks in use (0..1).", stats.kv_cache_usage),
            "kv_cache_free_blocks": ("Free KV blocks.", stats.num_free_blocks),
            "kv_cache_total_blocks": ("All KV blocks.", stats.num_total_blocks),
            "prefix_cache_hit_rate": (
                "Prompt tokens found in the prefix cache / looked up, since start.",
                hit_rate,
            ),
        }
        for name, (doc, value) in gauges.items():
            yield self._family(GaugeMetricFamily, name, doc, value)
        counters = {
            "prefix_cache_queries": ("Prompt tokens looked up.", stats.prefix_cache_queries),
            "prefix_cache_hits": ("Prompt tokens found.", stats.prefix_cache_hits),
            "num_preemptions": ("Requests preempted.", stats.num_preemptions),
            "spec_decode_num_drafts": ("Draft proposals verified.", stats.spec_decode_num_drafts),
            "spec_decode_num_draft_tokens": (
                "Draft tokens proposed and verified.",
                stats.spec_decode_num_draft_tokens,
            ),
            "spec_decode_num_accepted_tokens": (
                "Draft tokens accepted.",
                stats.spec_decode_num_accepted_tokens,
            ),
        }
        for name, (doc, value) in counters.items():
            yield self._family(CounterMetricFamily, name, doc, value)

    def _family(self, kind: type, name: str, doc: str, value: float) -> Metric:
        family = kind(f"warpserve:{name}", doc, labels=["model_name"])
        family.add_metric([self._model_name], value)
        return family
