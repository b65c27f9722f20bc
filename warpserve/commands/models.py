"""`warpserve models`: the bundled short names and where their files are."""

from __future__ import annotations

import argparse

from warpserve.weights.registry import BUNDLED_MODELS, ModelNotFoundError, resolve_model_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    del args
    for name, bundled in BUNDLED_MODELS.items():
        try:
            where = str(resolve_model_path(name))
        except ModelNotFoundError as exc:
            where = f"not installed ({exc})"
        print(f"{name:24s} {bundled.task:9s} {where}")
    return 0
