"""`warpserve optimize`: export, fuse, quantize and validate an encoder; keep the best.

Every variant is checked against the fp32 PyTorch reference (per-text cosine, STS-B
Spearman) and refused when over budget; the fastest survivor is what `warpserve serve`
then runs. Artifacts and the report go to the cache (WARPSERVE_CACHE_DIR or
~/.cache/warpserve), and with --output to a folder of your choice as well.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from warpserve.weights.registry import DEFAULT_ENCODER


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_ENCODER, help="bundled name or local folder")
    parser.add_argument("--task", default="embed", choices=["embed", "classify", "rerank", "auto"])
    parser.add_argument("--variants", help="comma-separated variant names (default: all)")
    parser.add_argument("--min-cosine", type=float, default=0.99, help="mean cosine budget")
    parser.add_argument("--max-spearman-drop", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--sts", type=Path, help="STS-B dev file (default: in data_dir())")
    parser.add_argument("--validation-pairs", type=int, help="first N STS pairs (default all)")
    parser.add_argument("--timing-texts", type=int, default=256, help="texts timed at batch 32")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--cache-dir", type=Path, help="artifact cache (default: see above)")
    parser.add_argument("--output", type=Path, help="also copy the chosen model and reports here")
    parser.add_argument("--list", action="store_true", help="list the variants and exit")


def run(args: argparse.Namespace) -> int:
    from warpserve.encoder.config import AccuracyBudget
    from warpserve.encoder.data import sts_dev_path
    from warpserve.encoder.models import load_spec
    from warpserve.encoder.pipeline import OptimizeOptions, optimize
    from warpserve.encoder.recipes import RECIPES
    from warpserve.encoder.report import render_markdown

    if args.list:
        for recipe in RECIPES.values():
            print(f"{recipe.name:28s} {recipe.summary}")
        return 0
    spec = load_spec(args.model, args.task)
    options = OptimizeOptions(
        variants=tuple(args.variants.split(",")) if args.variants else tuple(RECIPES),
        budget=AccuracyBudget(args.min_cosine, args.max_spearman_drop),
        num_threads=args.threads,
        sts_path=args.sts or sts_dev_path(),
        num_validation_pairs=args.validation_pairs,
        num_timing_texts=args.timing_texts,
        timing_rounds=args.rounds,
        cache_root=args.cache_dir,
    )
    report = optimize(spec, options)
    print(render_markdown(report))
    if args.output is not None:
        _copy_out(spec, report, args.output, args.cache_dir)
    return 0


def _copy_out(spec, report: dict, output: Path, cache_dir: Path | None) -> None:  # noqa: ANN001
    from warpserve.encoder.artifacts import report_path, variant_path

    output.mkdir(parents=True, exist_ok=True)
    source = report_path(spec, cache_dir)
    shutil.copy(source, output / "report.json")
    shutil.copy(source.with_suffix(".md"), output / "report.md")
    chosen = variant_path(spec, report["chosen"], cache_dir)
    if chosen.exists():  # the PyTorch reference has no file to copy
        shutil.copy(chosen, output / "model.onnx")
    print(f"wrote {output}/report.md" + (f" and {output}/model.onnx" if chosen.exists() else ""))
