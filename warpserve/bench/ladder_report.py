"""The ladder's report: rows with speedups computed from the measured rates, llama.cpp's
rows, the issue's targets as ratios, and the JSON / Markdown / PNG files."""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from warpserve.bench import report

logger = logging.getLogger(__name__)

TARGETS = {  # issue 6, "Done when"
    "single_stream_vs_llamacpp": 1.2,
    "concurrent_vs_llamacpp": 3.0,
    "top_rung_vs_rung0": 100.0,
}


def assemble(ladder, llamacpp: dict[str, Any] | None) -> dict[str, Any]:
    args, reference = ladder.args, ladder.reference
    rows = [ladder.rows[r] for r in sorted(ladder.rows)]
    add_speedups(rows)
    extra = llamacpp_rows(llamacpp, args.concurrency) if llamacpp and "per_type" in llamacpp else []
    for r in rows + extra:
        ppl = r.get("perplexity")
        r["perplexity_delta"] = ppl / reference.perplexity - 1 if ppl else None
    base = rows[0] if rows and rows[0]["rung"] == 0 and "error" not in rows[0] else None
    for r in extra:
        r["speedup_vs_rung0"] = _ratio(r, base)
    return {
        "command": _command_line(),
        "environment": report.environment(),
        "config": vars(args),
        "workload": _workload(ladder),
        "perplexity": {
            "reference_fp32": reference.perplexity,
            "num_scored_tokens": reference.num_scored_tokens,
            "window_starts": list(reference.window_starts),
            "eval": asdict(ladder.eval_config),
        },
        "rungs": rows,
        "llamacpp_rows": extra,
        "llamacpp": _strip_token_ids(llamacpp),
        "targets": targets(rows, extra),
    }


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "warpserve":
        argv[0] = "warpserve"
    return " ".join(argv)


def _workload(ladder) -> dict[str, Any]:
    args = ladder.args
    lengths = [len(p) for p in ladder.prompts]
    return {
        "prompts": args.prompts,
        "num_requests": len(lengths),
        "concurrency": args.concurrency,
        "output_len": args.output_len,
        "prompt_len_min": min(lengths),
        "prompt_len_mean": sum(lengths) / len(lengths),
        "prompt_len_max": max(lengths),
        "single_stream_requests": len(ladder.single_prompts),
        "naive_requests": args.naive_requests,
        "naive_output_len": args.naive_output_len,
        "threads": args.threads,
    }


def _ratio(row: dict, base: dict | None) -> float | None:
    if base is None or "error" in row:
        return None
    return row["generated_tokens_per_s"] / base["generated_tokens_per_s"]


def add_speedups(rows: list[dict]) -> None:
    """Aggregate generated tokens/s over rung 0's and over the previous measured rung's."""
    ok = [r for r in rows if "error" not in r]
    base = ok[0] if ok and ok[0]["rung"] == 0 else None
    previous = None
    for r in rows:
        r["speedup_vs_rung0"] = _ratio(r, base)
        r["speedup_vs_previous"] = _ratio(r, previous)
        if "error" not in r:
            previous = r


def llamacpp_rows(llamacpp: dict[str, Any], concurrency: int) -> list[dict]:
    """Two rows: the best type at one sequence (by decode tokens/s) and at N sequences."""
    per_type = llamacpp["per_type"]
    names = "/".join(per_type)
    one = max(per_type, key=lambda t: per_type[t]["single"]["decode_tokens_per_s"] or 0.0)
    many = max(per_type, key=lambda t: per_type[t]["batched"]["generated_tokens_per_s"])
    rows = []
    for quant, key, label in ((one, "single", "1 sequence"), (many, "batched", None)):
        result = per_type[quant][key]
        label = label or f"{result['concurrency']} sequences"
        single = per_type[quant]["single"]
        rows.append(
            {
                "rung": None,
                "name": f"llama.cpp {quant}, {label} (best of {names})",
                "system": "llama.cpp",
                "quantization": quant,
                "generated_tokens_per_s": result["generated_tokens_per_s"],
                "decode_tokens_per_s": single["decode_tokens_per_s"],
                "ttft_p50_s": result["ttft_s"]["p50"],
                "cores_used": result.get("cores_used"),
                "perplexity": per_type[quant].get("perplexity"),
                "requantized_from": per_type[quant]["variant"]["requantized_from"],
            }
        )
    return rows


def targets(rows: list[dict], extra: list[dict]) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    ours = [r for r in ok if r["system"] == "warpserve"]
    top = ours[-1] if ours else None
    base = ok[0] if ok and ok[0]["rung"] == 0 else None
    decode_rates = [r["decode_tokens_per_s"] for r in ours if r["decode_tokens_per_s"]]
    out: dict[str, Any] = {"top_rung": top["rung"] if top else None}
    if top and base:
        out["top_rung_vs_rung0"] = _target(
            top["generated_tokens_per_s"], base["generated_tokens_per_s"], "top_rung_vs_rung0"
        )
    if len(extra) == 2 and decode_rates:
        out["single_stream_vs_llamacpp"] = _target(
            max(decode_rates), extra[0]["decode_tokens_per_s"], "single_stream_vs_llamacpp"
        )
    if len(extra) == 2 and top and top["rung"] >= 3:
        out["concurrent_vs_llamacpp"] = _target(
            top["generated_tokens_per_s"],
            extra[1]["generated_tokens_per_s"],
            "concurrent_vs_llamacpp",
        )
    return out


def _target(ours: float, theirs: float, name: str) -> dict[str, Any]:
    ratio = ours / theirs
    return {"ours": ours, "theirs": theirs, "ratio": ratio, "target": TARGETS[name],
            "met": ratio >= TARGETS[name]}  # fmt: skip


def _strip_token_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_token_ids(v) for k, v in value.items() if k != "token_ids"}
    return value


# -- files ------------------------------------------------------------------------------


def write_all(out: str | Path, results: dict[str, Any]) -> list[Path]:
    json_path = report.write_json(out, results)
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown(results) + "\n")
    paths = [json_path, md_path]
    png = write_chart(json_path.with_suffix(".png"), results)
    if png is not None:
        paths.append(png)
    return paths


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _speedup(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def markdown(results: dict[str, Any]) -> str:
    w, env = results["workload"], results["environment"]
    lines = [
        "# warpserve optimization ladder",
        "",
        f"`{results['command']}`",
        "",
        f"{env['processor']}, {w['threads']} threads. {w['num_requests']} {w['prompts']} "
        f"prompts ({w['prompt_len_min']}-{w['prompt_len_max']} tokens, mean "
        f"{w['prompt_len_mean']:.0f}), {w['output_len']} new tokens each, greedy; one stream: "
        f"the first {w['single_stream_requests']}; rung 0: {w['naive_requests']} x "
        f"{w['naive_output_len']} tokens. Perplexity: fp32 "
        f"{results['perplexity']['reference_fp32']:.3f} on "
        f"{results['perplexity']['num_scored_tokens']} WikiText-2 tokens.",
        "",
        "| rung | system | generated tok/s | 1-stream decode tok/s | TTFT p50 (s) | vs rung 0 "
        "| vs previous | perplexity vs fp32 | CPU cores used | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rungs"] + results["llamacpp_rows"]:
        lines.append(_table_row(r))
    lines += _candidates_table(results["rungs"])
    lines += _llamacpp_table(results.get("llamacpp"))
    lines += _targets_lines(results["targets"])
    return "\n".join(lines)


def _table_row(r: dict) -> str:
    rung = "-" if r["rung"] is None else str(r["rung"])
    if "error" in r:
        return f"| {rung} | {r['name']} | failed | | | | | | | {r['error'][:120]} |"
    delta = r.get("perplexity_delta")
    notes = list(r.get("notes", []))
    if r.get("requantized_from"):
        notes.append(f"requantized from {r['requantized_from']}")
    return (
        f"| {rung} | {r['name']} | {r['generated_tokens_per_s']:.1f} | "
        f"{_num(r['decode_tokens_per_s'], '.1f')} | {_num(r['ttft_p50_s'], '.3f')} | "
        f"{_speedup(r['speedup_vs_rung0'])} | {_speedup(r.get('speedup_vs_previous'))} | "
        f"{'-' if delta is None else f'{delta:+.2%}'} | {_num(r.get('cores_used'), '.2f')} | "
        f"{'; '.join(notes)} |"
    )


def _candidates_table(rows: list[dict]) -> list[str]:
    """Rung 4's, 5's and 6's alternatives, so the choice between them can be checked."""
    with_candidates = [r for r in rows if r.get("candidates")]
    if not with_candidates:
        return []
    lines = [
        "",
        "Candidates (the rung keeps the fastest at the concurrent workload that passes;"
        " rung 4 on the eager backend, rung 5 on the fused one):",
        "",
        "| rung | candidate | generated tok/s | 1-stream decode tok/s | passes | detail |",
        "|---|---|---|---|---|---|",
    ]
    for r in with_candidates:
        for name, c in r["candidates"].items():
            if "within_budget" in c:
                passes = c["within_budget"]
                detail = f"perplexity {c['perplexity_delta']:+.2%} (budget {c['budget']:+.1%})"
            else:
                same = c["identical_to_rung5"]
                passes = same is None or all(same.values())
                rate = c["acceptance_rate"]
                detail = f"{c['num_draft_tokens']} draft tokens" + (
                    f", {rate:.0%} accepted" if rate is not None else ""
                )
            lines.append(
                f"| {r['rung']} | {name} | {c['generated_tokens_per_s']:.1f} | "
                f"{_num(c['decode_tokens_per_s'], '.1f')} | {'yes' if passes else 'NO'} | "
                f"{detail} |"
            )
    return lines


def _llamacpp_table(llamacpp: dict | None) -> list[str]:
    if not llamacpp:
        return ["", "llama.cpp: not run (--skip-llamacpp)."]
    if "skipped" in llamacpp:
        return ["", f"llama.cpp: skipped: {llamacpp['skipped']}"]
    lines = [
        "",
        "llama.cpp per type (same prompts; Q4_0/Q8_0 made by llama.cpp's quantizer from the "
        "source file when it is another type):",
        "",
        "| type | from | MB | 1-seq decode tok/s | 1-seq TTFT p50 (s) | N-seq tok/s | perplexity |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in llamacpp["per_type"].items():
        v, s, b = r["variant"], r["single"], r["batched"]
        lines.append(
            f"| {name} | {v['requantized_from'] or 'source'} | {v['size_mb']:.0f} | "
            f"{_num(s['decode_tokens_per_s'], '.1f')} | {s['ttft_s']['p50']:.3f} | "
            f"{b['generated_tokens_per_s']:.1f} ({b['concurrency']} seqs) | "
            f"{_num(r.get('perplexity'), '.3f')} |"
        )
    return lines


def _targets_lines(found: dict[str, Any]) -> list[str]:
    lines = ["", f"Targets (issue 6), top rung {found.get('top_rung')}:"]
    for name in TARGETS:
        t = found.get(name)
        if t is None:
            lines.append(f"- {name}: not measured in this run")
            continue
        lines.append(
            f"- {name}: {t['ours']:.1f} / {t['theirs']:.1f} = {t['ratio']:.2f}x "
            f"(target {t['target']:g}x: {'met' if t['met'] else 'NOT met'})"
        )
    return lines


def write_chart(path: Path, results: dict[str, Any]) -> Path | None:
    """Generated tokens/s per row, log scale; None (with a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("no PNG chart: matplotlib is not installed (pip install 'warpserve[bench]')")
        return None
    rows = [r for r in results["rungs"] + results["llamacpp_rows"] if "error" not in r]
    if not rows:
        return None
    labels = [f"{'' if r['rung'] is None else str(r['rung']) + ' '}{r['name']}" for r in rows]
    values = [r["generated_tokens_per_s"] for r in rows]
    colors = ["tab:gray" if r["system"] == "llama.cpp" else "tab:blue" for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.5))
    ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens/s (log scale)")
    for y, r in enumerate(rows[::-1]):
        speedup = r.get("speedup_vs_rung0")
        text = f" {r['generated_tokens_per_s']:.1f}" + (f" ({speedup:.1f}x)" if speedup else "")
        ax.text(r["generated_tokens_per_s"], y, text, va="center", fontsize=8)
    ax.set_title("warpserve optimization ladder")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
