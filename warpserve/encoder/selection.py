"""Which variant a service runs: the optimize report's choice, else the default recipe
validated on the spot, else PyTorch fp32."""

from __future__ import annotations

import logging
from pathlib import Path

from warpserve.encoder.artifacts import read_report
from warpserve.encoder.config import ServiceConfig
from warpserve.encoder.models import EncoderSpec
from warpserve.encoder.recipes import REFERENCE, STARTUP_RECIPES, get_recipe
from warpserve.encoder.session import EncoderBackend, TorchBackend

logger = logging.getLogger(__name__)

# a start-up check of the default variant, smaller than a full `warpserve optimize`
QUICK_VALIDATION_PAIRS = 300


def select_backend(
    spec: EncoderSpec, config: ServiceConfig, cache_root: Path | None
) -> EncoderBackend:
    try:
        name = config.variant or _validated_choice(spec, config, cache_root)
        if get_recipe(name).runtime == "torch":
            return TorchBackend(spec, name, config.num_threads)
        return _onnx_backend(spec, name, config, cache_root)
    except (ImportError, OSError, RuntimeError, ValueError) as exc:
        if config.variant is not None:
            raise  # the user asked for this one variant: say why it cannot run
        logger.warning("no ONNX variant for %s (%s); serving PyTorch fp32", spec.name, exc)
        return TorchBackend(spec, REFERENCE, config.num_threads)


def _validated_choice(spec: EncoderSpec, config: ServiceConfig, cache_root: Path | None) -> str:
    report = read_report(spec, cache_root)
    if report is None:
        from warpserve.encoder.pipeline import OptimizeOptions, optimize

        logger.info("no optimize report for %s: validating %s", spec.name, STARTUP_RECIPES)
        options = OptimizeOptions(
            variants=STARTUP_RECIPES,
            num_threads=config.num_threads,
            num_validation_pairs=QUICK_VALIDATION_PAIRS,
            num_timing_texts=64,
            num_latency_texts=10,
            timing_rounds=1,
            cache_root=cache_root,
        )
        report = optimize(spec, options)
    return str(report["chosen"])


def _onnx_backend(
    spec: EncoderSpec, name: str, config: ServiceConfig, cache_root: Path | None
) -> EncoderBackend:
    from warpserve.encoder.pipeline import calibration_feeds, calibration_inputs
    from warpserve.encoder.recipes import build_variant, session_fusions_to_skip
    from warpserve.encoder.session import OrtBackend, OrtSettings
    from warpserve.encoder.tokens import EncoderTokenizer

    def feeds() -> list:
        tokenizer = EncoderTokenizer(spec.path, spec.max_input_tokens)
        return calibration_feeds(spec, tokenizer, calibration_inputs(spec.task))

    recipe = get_recipe(name)
    path = build_variant(spec, recipe, feeds, cache_root)
    assert path is not None
    settings = OrtSettings(
        # data parallel: one thread per session, config.num_threads sessions runs at once
        num_threads=1 if config.data_parallel else config.num_threads,
        disabled_optimizers=session_fusions_to_skip(recipe),
        small_batch_tokens=config.small_batch_tokens,
        allow_spinning=config.allow_spinning,
    )
    return OrtBackend(path, name, settings)
