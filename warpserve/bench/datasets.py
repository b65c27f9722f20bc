"""Seeded benchmark prompts cut from WikiText-2, as token ids of exact lengths."""

from __future__ import annotations

import random
from pathlib import Path

from warpserve.config import DATA_DIR_ENV, data_dir


def default_text() -> Path:
    """WikiText-2 validation in the reference data folder (config.data_dir())."""
    return data_dir() / "wikitext2-valid.txt"


def find_text(path: str | None) -> Path:
    candidate = Path(path) if path else default_text()
    if not candidate.exists():
        raise FileNotFoundError(
            f"benchmark text {candidate} not found; pass --text with a plain-text file, or "
            f"set {DATA_DIR_ENV} to a folder holding wikitext2-valid.txt"
        )
    return candidate


def corpus_token_ids(tokenizer, text_path: Path, max_chars: int = 400_000) -> list[int]:
    text = text_path.read_text(encoding="utf-8")[:max_chars]
    return tokenizer.encode(text, add_special_tokens=False)


def sample_prompts(corpus: list[int], lengths: list[int], seed: int) -> list[list[int]]:
    """One slice of the corpus per requested length, at seeded random offsets."""
    rng = random.Random(seed)
    prompts = []
    for length in lengths:
        start = rng.randrange(0, len(corpus) - length)
        prompts.append(corpus[start : start + length])
    return prompts


def sample_lengths(low: int, high: int, count: int, seed: int) -> list[int]:
    """Uniform integers in [low, high], seeded."""
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(count)]


def parse_range(text: str) -> tuple[int, int]:
    """'100:400' -> (100, 400); '128' -> (128, 128)."""
    low, _, high = text.partition(":")
    lo, hi = int(low), int(high or low)
    if not 1 <= lo <= hi:
        raise ValueError(f"bad length range '{text}': expected LOW:HIGH with 1 <= LOW <= HIGH")
    return lo, hi
