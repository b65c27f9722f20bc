"""The ladder end to end on the tiny random Llama (every rung, tiny sizes), and the report's
arithmetic: speedups come from the measured rates, llama.cpp rows skip cleanly."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from warpserve.bench import ladder, ladder_report

TINY_ARGS = [
    "--prompts", "wikitext", "--prompt-len", "6:12", "--num-requests", "3",
    "--concurrency", "3", "--output-len", "6", "--single-stream-requests", "2",
    "--naive-requests", "1", "--naive-output-len", "3", "--ppl-windows", "2",
    "--ppl-window-tokens", "24", "--ppl-max-chars", "8000", "--threads", "1",
    "--kv-cache-gib", "0.01", "--num-speculative-tokens", "3",
]  # fmt: skip


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ladder.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def results(tiny_llama_dir, tmp_path_factory):
    """One full ladder run with llama-cpp-python made unimportable."""
    out = tmp_path_factory.mktemp("ladder") / "ladder.json"
    args = _args("--model", str(tiny_llama_dir), *TINY_ARGS, "--out", str(out))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` -> ImportError
        assert ladder.run(args) == 0
    return json.loads(out.read_text()), out


def test_every_rung_reports_its_fields(results):
    data, _ = results
    rows = data["rungs"]
    assert [r["rung"] for r in rows] == list(ladder.ALL_RUNGS)
    for r in rows:
        assert "error" not in r, r
        assert r["generated_tokens_per_s"] > 0 and r["ttft_p50_s"] > 0
        assert r["perplexity"] > 1 and r["perplexity_delta"] is not None
    # One stream: a decode rate; continuous batching has none of its own.
    assert all(rows[i]["decode_tokens_per_s"] > 0 for i in (0, 1, 2, 4, 5, 6))
    assert rows[3]["decode_tokens_per_s"] is None
    assert rows[3]["workload"]["concurrency"] == 3
    assert rows[0]["workload"]["output_len"] == 3 and rows[2]["workload"]["output_len"] == 6
    assert rows[2]["perplexity_delta"] == 0.0  # the fp32 engine is the reference
    assert data["workload"]["num_requests"] == 3
    assert data["perplexity"]["num_scored_tokens"] == 2 * 23


def test_speedups_are_ratios_of_the_measured_rates(results):
    rows = results[0]["rungs"]
    base = rows[0]["generated_tokens_per_s"]
    assert rows[0]["speedup_vs_previous"] is None
    for previous, r in zip(rows, rows[1:], strict=False):
        rate = r["generated_tokens_per_s"]
        assert r["speedup_vs_rung0"] == pytest.approx(rate / base)
        assert r["speedup_vs_previous"] == pytest.approx(rate / previous["generated_tokens_per_s"])
    top = results[0]["targets"]["top_rung_vs_rung0"]
    assert top["ratio"] == pytest.approx(rows[-1]["generated_tokens_per_s"] / base)


def test_quantization_and_speculation_choices(results):
    rows = results[0]["rungs"]
    quant = rows[4]
    assert set(quant["candidates"]) == {"int8", "int4"}
    chosen = quant["config"]["quantization"]
    within = {p: c for p, c in quant["candidates"].items() if c["within_budget"]}
    assert chosen == max(within, key=lambda p: within[p]["generated_tokens_per_s"])
    # Rung 5 measures every preset within budget again, fused, and keeps the fastest there.
    fused = rows[5]["candidates"] or {rows[5]["config"]["quantization"]: None}
    assert set(fused) == set(within)
    fused_within = {p: c for p, c in rows[5]["candidates"].items() if c["within_budget"]}
    if fused_within:
        best = max(fused_within, key=lambda p: fused_within[p]["generated_tokens_per_s"])
        assert rows[5]["config"]["quantization"] == best
    assert rows[5]["config"]["decode_backend"] == "fused"
    assert rows[5]["decode_backend_ran"]
    assert spec_quantization(rows[6]) == rows[5]["config"]["quantization"]
    spec = rows[6]
    assert set(spec["candidates"]) == {"ngram", "auto"}
    # Speculation is lossless: greedy tokens equal rung 5's on both workloads.
    assert spec["identical_to_rung5"] == {"single": True, "concurrent": True}


def test_llamacpp_rows_skip_cleanly_and_files_are_written(results):
    data, out = results
    assert "llama-cpp-python is not installed" in data["llamacpp"]["skipped"]
    assert data["llamacpp_rows"] == []
    markdown = out.with_suffix(".md").read_text()
    assert "llama.cpp: skipped: llama-cpp-python is not installed" in markdown
    for r in data["rungs"]:
        assert f"| {r['rung']} | {r['name']} | {r['generated_tokens_per_s']:.1f} |" in markdown
    assert "| 4 | int4 |" in markdown and "| 6 | ngram |" in markdown  # the candidates
    pytest.importorskip("matplotlib")
    assert out.with_suffix(".png").stat().st_size > 0


def spec_quantization(spec_row) -> str:
    return spec_row["config"]["quantization"]


def _row(rung, rate, system="warpserve", **extra):
    return {"rung": rung, "system": system, "generated_tokens_per_s": rate,
            "decode_tokens_per_s": extra.pop("decode", None), **extra}  # fmt: skip


def test_speedups_skip_failed_rungs():
    rows = [_row(0, 2.0), _row(1, 4.0), {"rung": 2, "error": "boom"}, _row(3, 40.0)]
    ladder_report.add_speedups(rows)
    assert rows[1]["speedup_vs_rung0"] == 2.0 and rows[1]["speedup_vs_previous"] == 2.0
    assert rows[2]["speedup_vs_rung0"] is None
    assert rows[3]["speedup_vs_rung0"] == 20.0 and rows[3]["speedup_vs_previous"] == 10.0


def test_llamacpp_rows_take_the_best_type_per_workload_and_targets_use_them():
    def result(single_decode, batched):
        return {
            "variant": {"requantized_from": "Q4_1", "size_mb": 1.0},
            "single": {"decode_tokens_per_s": single_decode, "generated_tokens_per_s": 1.0,
                       "ttft_s": {"p50": 0.1}, "concurrency": 1},
            "batched": {"generated_tokens_per_s": batched, "ttft_s": {"p50": 0.5},
                        "concurrency": 32},
        }  # fmt: skip

    per_type = {"Q4_0": result(100.0, 150.0), "Q8_0": result(70.0, 160.0)}
    one, many = ladder_report.llamacpp_rows({"per_type": per_type}, 32)
    assert one["quantization"] == "Q4_0" and one["decode_tokens_per_s"] == 100.0
    assert many["quantization"] == "Q8_0" and many["generated_tokens_per_s"] == 160.0
    rows = [_row(0, 1.0), _row(2, 20.0, decode=130.0), _row(3, 480.0)]
    found = ladder_report.targets(rows, [one, many])
    assert found["single_stream_vs_llamacpp"]["ratio"] == pytest.approx(1.3)
    assert found["single_stream_vs_llamacpp"]["met"]
    assert found["concurrent_vs_llamacpp"]["ratio"] == pytest.approx(3.0)
    assert found["top_rung_vs_rung0"]["ratio"] == pytest.approx(480.0)


def test_rungs_option_is_checked():
    assert ladder.parse_rungs("3,0,3") == [0, 3]
    with pytest.raises(ValueError, match="--rungs"):
        ladder.parse_rungs("0,9")
