"""Text for validation, calibration and benchmarks: STS-B dev pairs and seeded WikiText cuts.

Calibration and benchmark text come from WikiText, validation from STS-B: nothing is tuned
on the sentences it is judged on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from warpserve.config import DATA_DIR_ENV, data_dir


def sts_dev_path() -> Path:
    return data_dir() / "sts-dev.csv"


def wikitext_path() -> Path:
    return data_dir() / "wikitext2-valid.txt"


@dataclass(frozen=True)
class ScoredPair:
    first: str
    second: str
    score: float  # gold similarity, 0..5


def read_sts(path: Path | None = None, limit: int | None = None) -> list[ScoredPair]:
    """STS-B dev (tab-separated: genre, file, year, id, score, sentence1, sentence2)."""
    path = path or sts_dev_path()
    if not path.exists():
        raise FileNotFoundError(
            f"STS-B dev file {path} not found; pass --sts PATH or set {DATA_DIR_ENV}"
        )
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) >= 7:
            pairs.append(ScoredPair(fields[5], fields[6], float(fields[4])))
    return pairs[:limit] if limit is not None else pairs


def wikitext_words(path: Path | None = None) -> list[str]:
    path = path or wikitext_path()
    if not path.exists():
        raise FileNotFoundError(
            f"WikiText file {path} not found; pass --text PATH or set {DATA_DIR_ENV}"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    # headings (" = Title = ") are not prose
    return [word for line in lines if not line.strip().startswith("=") for word in line.split()]


def sample_sentences(
    count: int, min_words: int, max_words: int, seed: int, path: Path | None = None
) -> list[str]:
    """`count` seeded cuts of WikiText, each min_words..max_words words long."""
    words = wikitext_words(path)
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        length = rng.randint(min_words, max_words)
        start = rng.randrange(len(words) - length)
        sentences.append(" ".join(words[start : start + length]))
    return sentences


def calibration_texts(count: int = 128, seed: int = 1234) -> list[str]:
    return sample_sentences(count, 8, 64, seed)
