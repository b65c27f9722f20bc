"""`optimize`: build every variant, validate each against fp32 PyTorch, time them side by
side, refuse the ones over budget, choose the fastest survivor, write the report."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from warpserve.encoder import data
from warpserve.encoder.artifacts import report_path
from warpserve.encoder.config import AccuracyBudget
from warpserve.encoder.measure import time_backends
from warpserve.encoder.models import EncoderSpec
from warpserve.encoder.offline import encode_texts, length_sorted_batches
from warpserve.encoder.recipes import (
    RECIPES,
    REFERENCE,
    build_details,
    build_variant,
    get_recipe,
    session_fusions_to_skip,
)
from warpserve.encoder.report import machine_info, write_report
from warpserve.encoder.session import EncoderBackend, OrtBackend, OrtSettings, TorchBackend
from warpserve.encoder.tokens import EncoderTokenizer, TextInput, collate
from warpserve.encoder.validate import measure_accuracy, refusal_reasons

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizeOptions:
    variants: tuple[str, ...] = tuple(RECIPES)  # the reference is always added
    budget: AccuracyBudget = field(default_factory=AccuracyBudget)
    num_threads: int = 2
    sts_path: Path = field(default_factory=data.sts_dev_path)
    num_validation_pairs: int | None = None  # None: all of STS-B dev (1,500 pairs)
    num_timing_texts: int = 256  # seeded WikiText cuts of 8-64 words, batch 32
    num_latency_texts: int = 50  # batch 1
    timing_rounds: int = 3
    cache_root: Path | None = None


@dataclass
class _Inputs:
    validation: list[TextInput]
    gold: np.ndarray | None
    timing: list[TextInput]
    calibration: list[TextInput]


def optimize(spec: EncoderSpec, options: OptimizeOptions) -> dict:
    tokenizer = EncoderTokenizer(spec.path, spec.max_input_tokens)
    inputs = _prepare_inputs(spec, options)
    names = [REFERENCE] + [n for n in options.variants if n != REFERENCE]
    backends: dict[str, EncoderBackend] = {}
    entries: dict[str, dict] = {}
    reference_out: np.ndarray | None = None
    for name in names:
        backend, build_s = _build(spec, name, tokenizer, inputs, options)
        outputs = encode_texts(backend, tokenizer, inputs.validation, spec.input_names)
        reference_out = outputs if reference_out is None else reference_out
        accuracy = measure_accuracy(reference_out, outputs, spec.task, inputs.gold)
        refusal = [] if name == REFERENCE else refusal_reasons(accuracy, options.budget)
        logger.info("%s: %s %s", name, accuracy, refusal or "ok")
        backends[name] = backend
        entries[name] = _entry(spec, name, build_s, accuracy.to_dict(), refusal, options)
    _add_timings(spec, tokenizer, backends, entries, inputs, options)
    report = _report(spec, options, list(entries.values()), inputs)
    write_report(report, report_path(spec, options.cache_root))
    return report


def _build(
    spec: EncoderSpec,
    name: str,
    tokenizer: EncoderTokenizer,
    inputs: _Inputs,
    options: OptimizeOptions,
) -> tuple[EncoderBackend, float]:
    start = time.perf_counter()
    recipe = get_recipe(name)
    if recipe.runtime == "torch":
        return TorchBackend(spec, name, options.num_threads), time.perf_counter() - start
    feeds = lambda: calibration_feeds(spec, tokenizer, inputs.calibration)  # noqa: E731
    path = build_variant(spec, recipe, feeds, options.cache_root)
    assert path is not None
    settings = OrtSettings(options.num_threads, session_fusions_to_skip(recipe))
    backend = OrtBackend(path, name, settings)
    return backend, time.perf_counter() - start


def calibration_feeds(
    spec: EncoderSpec, tokenizer: EncoderTokenizer, texts: list[TextInput], batch_size: int = 32
) -> list[dict[str, np.ndarray]]:
    encoded = tokenizer.encode_many(texts, truncate=True)
    batches = length_sorted_batches(encoded, batch_size)
    return [collate([encoded[i] for i in b], tokenizer.pad_id, spec.input_names) for b in batches]


def _prepare_inputs(spec: EncoderSpec, options: OptimizeOptions) -> _Inputs:
    pairs = data.read_sts(options.sts_path, options.num_validation_pairs)
    timing = data.sample_sentences(options.num_timing_texts, 8, 64, seed=0)
    calibration = calibration_inputs(spec.task)
    gold = np.array([p.score for p in pairs])
    if spec.task == "embed":
        validation: list[TextInput] = [*(p.first for p in pairs), *(p.second for p in pairs)]
        return _Inputs(validation, gold, list(timing), calibration)
    if spec.task == "classify":
        return _Inputs([p.first for p in pairs], None, list(timing), calibration)
    validation = [(p.first, p.second) for p in pairs]
    return _Inputs(validation, gold, _as_pairs(timing * 2), calibration)


def _as_pairs(texts: list[str]) -> list[TextInput]:
    return list(zip(texts[::2], texts[1::2], strict=False))


def calibration_inputs(task: str) -> list[TextInput]:
    """Seeded WikiText cuts; sentence pairs for cross-encoders."""
    texts = data.calibration_texts()
    return _as_pairs(texts) if task == "rerank" else list(texts)


def _entry(
    spec: EncoderSpec,
    name: str,
    build_s: float,
    accuracy: dict,
    refusal: list[str],
    options: OptimizeOptions,
) -> dict:
    recipe = get_recipe(name)
    return {
        "name": name,
        "summary": recipe.summary,
        "runtime": recipe.runtime,
        "build": build_details(spec, name, options.cache_root),
        "build_s": round(build_s, 2),
        "accuracy": accuracy,
        "passed": not refusal,
        "refusal": refusal,
    }


def _add_timings(
    spec: EncoderSpec,
    tokenizer: EncoderTokenizer,
    backends: dict[str, EncoderBackend],
    entries: dict[str, dict],
    inputs: _Inputs,
    options: OptimizeOptions,
) -> None:
    encoded = tokenizer.encode_many(inputs.timing, truncate=True)
    timings = time_backends(
        backends,
        encoded,
        encoded[: options.num_latency_texts],
        tokenizer.pad_id,
        spec.input_names,
        rounds=options.timing_rounds,
    )
    for name, timing in timings.items():
        entries[name]["timing"] = asdict(timing)


# throughput differences below this are within timing noise on a shared CPU
TIE_FRACTION = 0.03


def choose(variants: list[dict]) -> dict:
    """The fastest variant within budget; near-ties go to the more accurate one."""
    passed = [v for v in variants if v["passed"]]
    fastest = max(v["timing"]["throughput"] for v in passed)
    near = [v for v in passed if v["timing"]["throughput"] >= (1 - TIE_FRACTION) * fastest]
    return max(near, key=lambda v: v["accuracy"]["mean_cosine"])


def _report(
    spec: EncoderSpec, options: OptimizeOptions, variants: list[dict], inputs: _Inputs
) -> dict:
    chosen = choose(variants)
    return {
        "model": spec.name,
        "model_path": str(spec.path),
        "task": spec.task,
        "machine": machine_info(),
        "num_threads": options.num_threads,
        "budget": asdict(options.budget),
        "validation": f"{len(inputs.validation)} inputs from {options.sts_path.name}",
        "timing_set": f"{len(inputs.timing)} WikiText cuts of 8-64 words, batch 32, interleaved best of {options.timing_rounds}",
        "reference": REFERENCE,
        "chosen": chosen["name"],
        "variants": variants,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
