"""Means over seeds and differences between two models with their standard errors: the tables'
and the studies' statistics."""
import numpy as np


def mean_std(values):
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def difference(a: list, b: list) -> tuple[float, float | None]:
    """mean(a) - mean(b) and its standard error sqrt(s_a^2/n_a + s_b^2/n_b) (None with one seed on
    either side): two models' metric over independently trained seeds."""
    diff = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return diff, None
    return diff, float(np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)))


def pooled_difference(diffs: list[tuple[float, float]]) -> tuple[float, float]:
    """Per-class differences averaged over the D classes, (1/D) sum_d diff_d, with standard error
    sqrt(sum_d se_d^2) / D (classes trained independently)."""
    return float(np.mean([d for d, _ in diffs])), float(np.sqrt(sum(se ** 2 for _, se in diffs)) / len(diffs))


def beyond_2se(diff: float, se: float | None) -> str:
    """The studies' mark for a difference larger than twice its standard error."""
    return " (beyond 2 s.e.)" if se is not None and abs(diff) > 2 * se else ""
