"""The accuracy gate: every variant against the fp32 PyTorch reference, on the same inputs.

Per row, the cosine between the variant's and the reference's output distribution
(embed: the embedding; classify: class probabilities; rerank: [p, 1 - p] of the
relevance score), reported as mean and minimum. On STS-B dev, the Spearman correlation
with the gold scores (embed: cosine of the two embeddings; rerank: the pair's score),
reported as the drop from the reference's own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from warpserve.encoder.config import AccuracyBudget


@dataclass(frozen=True)
class Accuracy:
    mean_cosine: float
    min_cosine: float
    spearman: float | None  # None where the task has no gold scores (classify)
    reference_spearman: float | None

    @property
    def spearman_drop(self) -> float | None:
        if self.spearman is None or self.reference_spearman is None:
            return None
        return self.reference_spearman - self.spearman

    def to_dict(self) -> dict:
        return {**asdict(self), "spearman_drop": self.spearman_drop}


def output_distribution(outputs: np.ndarray, task: str) -> np.ndarray:
    """What a caller sees per row, as a vector comparable by cosine."""
    if task == "embed":
        return outputs
    if task == "rerank" or outputs.shape[-1] == 1:
        probability = 1.0 / (1.0 + np.exp(-outputs[:, -1:]))
        return np.concatenate([probability, 1.0 - probability], axis=-1)
    shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def row_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    dot = (reference * candidate).sum(-1)
    norms = np.linalg.norm(reference, axis=-1) * np.linalg.norm(candidate, axis=-1)
    return dot / np.maximum(norms, 1e-12)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the ranks (ties share their mean rank)."""
    rank_x, rank_y = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    rank_x, rank_y = rank_x - rank_x.mean(), rank_y - rank_y.mean()
    return float((rank_x * rank_y).sum() / np.sqrt((rank_x**2).sum() * (rank_y**2).sum()))


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def pair_scores(outputs: np.ndarray, num_pairs: int, task: str) -> np.ndarray:
    """embed: rows [0, n) are first sentences, [n, 2n) second ones -> cosine per pair;
    rerank: one row per pair -> its relevance logit."""
    if task == "embed":
        return row_cosines(outputs[:num_pairs], outputs[num_pairs : 2 * num_pairs])
    return outputs[:num_pairs, -1]


def measure_accuracy(
    reference: np.ndarray, candidate: np.ndarray, task: str, gold: np.ndarray | None
) -> Accuracy:
    cosines = row_cosines(
        output_distribution(reference, task), output_distribution(candidate, task)
    )
    if gold is None or task == "classify":
        return Accuracy(float(cosines.mean()), float(cosines.min()), None, None)
    num_pairs = len(gold)
    return Accuracy(
        mean_cosine=float(cosines.mean()),
        min_cosine=float(cosines.min()),
        spearman=spearman(pair_scores(candidate, num_pairs, task), gold),
        reference_spearman=spearman(pair_scores(reference, num_pairs, task), gold),
    )


def refusal_reasons(accuracy: Accuracy, budget: AccuracyBudget) -> list[str]:
    """Empty when the variant is within budget; otherwise why it is refused."""
    reasons = []
    if accuracy.mean_cosine < budget.min_mean_cosine:
        reasons.append(f"mean cosine {accuracy.mean_cosine:.4f} < {budget.min_mean_cosine}")
    drop = accuracy.spearman_drop
    if drop is not None and drop > budget.max_spearman_drop:
        reasons.append(f"Spearman drop {drop:.4f} > {budget.max_spearman_drop}")
    return reasons
