"""The soak's measurements and verdict: samples of the server (its /metrics and, for a local
process, /proc/<pid>), the pass criteria, a Markdown table and a PNG over time."""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from warpserve.bench.report import percentiles
from warpserve.bench.soak_load import Result

logger = logging.getLogger(__name__)

MAX_RSS_SLOPE_MB_PER_MIN = 1.0
MAX_LAG_P99_S = 0.1
THREADS_SLACK = 4  # idle pool threads may outlive the load by a few seconds
FDS_SLACK = 8
_LAG_HISTOGRAM = "warpserve:event_loop_lag_distribution_seconds_bucket"
_GAUGES = {
    "in_flight": "warpserve:num_requests_in_flight",
    "running": "warpserve:num_requests_running",
    "waiting": "warpserve:num_requests_waiting",
    "free_blocks": "warpserve:kv_cache_free_blocks",
    "total_blocks": "warpserve:kv_cache_total_blocks",
    "lag_s": "warpserve:event_loop_lag_seconds",
}
_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


@dataclass
class Sample:
    t_s: float  # since the soak began
    rss_mb: float | None = None
    threads: int | None = None
    fds: int | None = None
    in_flight: float | None = None
    running: float | None = None
    waiting: float | None = None
    free_blocks: float | None = None
    total_blocks: float | None = None
    lag_s: float | None = None
    lag_buckets: dict[str, float] = field(default_factory=dict)  # le -> cumulative count


def parse_metrics(text: str, sample: Sample) -> None:
    """Fill `sample` from Prometheus text: each gauge summed over its label sets."""
    totals: defaultdict[str, float] = defaultdict(float)
    for line in text.splitlines():
        match = _SAMPLE_LINE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        if name == _LAG_HISTOGRAM:
            le = re.search(r'le="([^"]+)"', labels or "")
            if le:
                sample.lag_buckets[le.group(1)] = float(value)
        else:
            totals[name] += float(value)
    for attribute, name in _GAUGES.items():
        if name in totals:
            setattr(sample, attribute, totals[name])


def read_proc(pid: int | None, sample: Sample) -> None:
    """RSS, threads and open files of a local server process (Linux /proc)."""
    if pid is None:
        return
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        sample.fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "VmRSS":
            sample.rss_mb = int(value.split()[0]) / 1024
        elif key == "Threads":
            sample.threads = int(value)


def rss_slope_mb_per_min(samples: list[Sample]) -> float | None:
    """Least-squares slope of RSS against time; None with fewer than 3 points."""
    points = [(s.t_s / 60, s.rss_mb) for s in samples if s.rss_mb is not None]
    if len(points) < 3:
        return None
    mean_t = sum(t for t, _ in points) / len(points)
    mean_r = sum(r for _, r in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (r - mean_r) for t, r in points) / spread if spread else None


def lag_quantile(first: Sample, last: Sample, q: float = 0.99) -> float | None:
    """The q-quantile of the lag samples taken between two scrapes, interpolated within
    the histogram bucket that holds it (as Prometheus' histogram_quantile)."""
    if not last.lag_buckets:
        return None
    bounds = sorted(last.lag_buckets, key=float)
    counts = [last.lag_buckets[b] - first.lag_buckets.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank, lower, below = q * counts[-1], 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        upper = float(bound)
        if cumulative >= rank:
            if math.isinf(upper):
                return lower
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, cumulative
    return lower


def evaluate(
    results: list[Result],
    samples: list[Sample],
    baseline: Sample,
    final: Sample,
    final_health: int | str,
    load_window: tuple[float, float],
    health_latencies: list[float],
) -> dict[str, dict[str, object]]:
    """Each criterion: its value, its threshold in words, and whether it passed."""
    start, end = load_window
    in_load = [s for s in samples if start <= s.t_s <= end]
    second_half = [s for s in in_load if s.t_s >= (start + end) / 2]
    unexpected = [r for r in results if not r.is_expected]
    slope = rss_slope_mb_per_min(second_half)
    lag = lag_quantile(in_load[0], in_load[-1]) if len(in_load) >= 2 else None
    lag_source = "server event_loop_lag histogram"
    if lag is None:  # a server without the metric: /health latency bounds it from above
        lag, lag_source = percentiles(health_latencies, (99,))["p99"], "client /health latency"
    return {
        "documented_statuses": _criterion(
            len(unexpected), "0 unexpected answers", not unexpected, _examples(unexpected)
        ),
        "counters_back_to_baseline": _criterion(
            _counters(baseline, final), "in-flight, running, waiting, free blocks equal; "
            f"threads +{THREADS_SLACK}, fds +{FDS_SLACK}", counters_ok(baseline, final)
        ),
        "rss_slope_mb_per_min": _criterion(
            slope, f"< {MAX_RSS_SLOPE_MB_PER_MIN} over the last half",
            slope is not None and slope < MAX_RSS_SLOPE_MB_PER_MIN,
        ),
        "event_loop_lag_p99_s": _criterion(
            lag, f"< {MAX_LAG_P99_S} ({lag_source})",
            lag is not None and not math.isnan(lag) and lag < MAX_LAG_P99_S,
        ),
        "health_at_end": _criterion(final_health, "200", final_health == 200),
    }  # fmt: skip


def _criterion(value: object, threshold: str, passed: bool, detail: object = None) -> dict:
    return {"value": value, "threshold": threshold, "passed": passed, "detail": detail}


def _examples(unexpected: list[Result]) -> list[dict[str, object]]:
    by_kind_status = Counter((r.kind, str(r.status)) for r in unexpected)
    first: dict[tuple[str, str], Result] = {}
    for r in unexpected:
        first.setdefault((r.kind, str(r.status)), r)
    return [
        {
            "kind": kind,
            "status": status,
            "count": n,
            "first_at_s": round(first[(kind, status)].started_s, 1),
            "latency_s": round(first[(kind, status)].latency_s, 3),
            "detail": first[(kind, status)].detail,
        }
        for (kind, status), n in by_kind_status.most_common(10)
    ]


def _counters(baseline: Sample, final: Sample) -> dict[str, object]:
    names = ("in_flight", "running", "waiting", "free_blocks", "threads", "fds")
    return {n: [getattr(baseline, n), getattr(final, n)] for n in names}


def counters_ok(baseline: Sample, final: Sample) -> bool:
    equal = all(
        getattr(baseline, n) == getattr(final, n)
        for n in ("in_flight", "running", "waiting", "free_blocks")
    )
    threads_ok = final.threads is None or final.threads <= (baseline.threads or 0) + THREADS_SLACK
    fds_ok = final.fds is None or final.fds <= (baseline.fds or 0) + FDS_SLACK
    return equal and threads_ok and fds_ok


def status_table(results: list[Result]) -> dict[str, dict[str, int]]:
    table: dict[str, Counter[str]] = {}
    for r in results:
        table.setdefault(r.kind, Counter())[str(r.status)] += 1
    return {kind: dict(sorted(counts.items())) for kind, counts in sorted(table.items())}


def markdown(report: dict) -> str:
    """The criteria and the answers by kind, as docs/RELIABILITY.md shows them."""
    lines = ["| criterion | value | threshold | pass |", "|---|---|---|---|"]
    for name, c in report["criteria"].items():
        lines.append(f"| {name} | {_fmt(c['value'])} | {c['threshold']} | {_yes(c['passed'])} |")
    lines += ["", "| kind | answers (status: count) | latency p50 / p99 s |", "|---|---|---|"]
    for kind, counts in report["statuses"].items():
        answers = ", ".join(f"{status}: {n}" for status, n in counts.items())
        lat = report["latency_s"].get(kind, {})
        lines.append(f"| {kind} | {answers} | {_fmt(lat.get('p50'))} / {_fmt(lat.get('p99'))} |")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v[0]}→{v[1]}" for k, v in value.items())
    return str(value)


def _yes(passed: object) -> str:
    return "yes" if passed else "**no**"


def latency_by_kind(results: list[Result]) -> dict[str, dict[str, float]]:
    kinds = sorted({r.kind for r in results})
    return {k: percentiles([r.latency_s for r in results if r.kind == k]) for k in kinds}


def samples_json(samples: list[Sample]) -> list[dict[str, object]]:
    return [{k: v for k, v in asdict(s).items() if k != "lag_buckets"} for s in samples]


def plot(report: dict, results: list[Result], samples: list[Sample], path: Path) -> Path | None:
    """RSS and threads, request latency, event-loop lag and in-flight requests over time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("no PNG: matplotlib is not installed (pip install 'warpserve[bench]')")
        return None
    figure, (rss, latency, lag) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    t = [s.t_s / 60 for s in samples]
    rss.plot(t, [s.rss_mb for s in samples], label="RSS MB")
    rss.set_ylabel("server RSS (MB)")
    for kind in sorted({r.kind for r in results}):
        points = [(r.started_s / 60, r.latency_s) for r in results if r.kind == kind]
        latency.scatter(*zip(*points, strict=True), s=4, label=kind)
    latency.set_yscale("log")
    latency.set_ylabel("latency (s)")
    latency.legend(fontsize=6, ncol=4)
    lag.plot(t, [1e3 * (s.lag_s or 0.0) for s in samples], label="event-loop lag (ms)")
    lag.plot(t, [s.in_flight or 0.0 for s in samples], label="in-flight requests")
    lag.set_xlabel("minutes")
    lag.legend(fontsize=7)
    for axis in (rss, latency, lag):
        for marker in report.get("events", []):
            axis.axvline(marker["t_s"] / 60, color="grey", linestyle=":")
    figure.suptitle(f"warpserve bench soak: {'pass' if report['passed'] else 'FAIL'}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
