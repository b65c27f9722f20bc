"""The optimize report: every variant's latency, throughput and accuracy, as JSON and Markdown."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def machine_info() -> dict:
    """CPU model and the SIMD flags that decide which int8 kernels run, plus versions."""
    model, flags = platform.processor() or "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return {
        "cpu": model,
        "num_cpus": os.cpu_count(),
        "cpu_flags": [flag for flag in _CPU_FLAGS if flag in flags],
        "versions": {name: _version(name) for name in ("onnxruntime", "torch", "transformers")},
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_report(report: dict, json_path: Path) -> Path:
    """Writes report.json and report.md side by side; returns the Markdown path."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2))
    markdown_path = json_path.with_suffix(".md")
    markdown_path.write_text(render_markdown(report))
    return markdown_path


def render_markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"# Encoder variants: {report['model']} ({report['task']})",
        "",
        f"CPU: {machine['cpu']}, {machine['num_cpus']} CPUs, "
        f"flags: {', '.join(machine['cpu_flags']) or 'none of note'}; "
        f"threads: {report['num_threads']}",
        f"Budget: mean cosine >= {report['budget']['min_mean_cosine']}, "
        f"Spearman drop <= {report['budget']['max_spearman_drop']}. "
        f"Validation: {report['validation']}",
        f"Throughput: {report['timing_set']}",
        "",
        "| variant | sent/s | x ref | p50 ms | p99 ms | cos mean | cos min | Spearman | drop | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    reference = next(v for v in report["variants"] if v["name"] == report["reference"])
    lines += [_row(v, reference) for v in report["variants"]]
    lines += [
        "",
        f"Chosen: **{report['chosen']}** (the fastest variant within budget; "
        "within 3% of it, the most accurate)",
        "",
    ]
    lines += [f"- {v['name']}: {v['summary']}" for v in report["variants"]]
    return "\n".join(lines) + "\n"


def _row(variant: dict, reference: dict) -> str:
    accuracy, timing = variant["accuracy"], variant["timing"]
    speedup = timing["throughput"] / reference["timing"]["throughput"]
    verdict = "ok" if variant["passed"] else "refused: " + "; ".join(variant["refusal"])
    cells = [
        variant["name"],
        f"{timing['throughput']:.1f}",
        f"{speedup:.2f}",
        f"{timing['latency_p50_ms']:.2f}",
        f"{timing['latency_p99_ms']:.2f}",
        f"{accuracy['mean_cosine']:.4f}",
        f"{accuracy['min_cosine']:.4f}",
        _maybe(accuracy["spearman"]),
        _maybe(accuracy["spearman_drop"]),
        verdict,
    ]
    return "| " + " | ".join(cells) + " |"


def _maybe(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
