"""Statistics for results over seeds: mean ± standard error, seed-paired differences with
Student-t intervals, and the minimum detectable effect of a paired t-test (``scipy.stats``).

Accuracies are fractions in [0, 1]; [`fmt`][odezoo.experiments.statistics.fmt] and
[`pts`][odezoo.experiments.statistics.pts] print them as points.
"""
from __future__ import annotations

import math
from collections import defaultdict

__all__ = ["mean_se", "t_quantile", "mde", "summarize", "paired", "fmt", "pts"]


def mean_se(values):
    """(mean, standard error of the mean, n); the SE is NaN for a single value."""
    n = len(values)
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")
    return mean, se, n


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (inf for df < 1)."""
    from scipy import stats

    return float(stats.t.ppf(q, df)) if df >= 1 else float("inf")


def mde(sd: float, n: int, alpha: float = 0.05, power: float = 0.80) -> float:
    """Minimum detectable effect of a two-sided paired t-test at level ``alpha`` with ``power``:
    (t_{1-α/2, n-1} + t_{power, n-1}) · sd / √n."""
    if n < 2 or math.isnan(sd):
        return float("nan")
    return (t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


def summarize(rows, keys=("arm",)):
    """Group rows by ``keys`` + (attack, eps) across seeds -> mean, standard error, seeds, examples."""
    groups, examples = defaultdict(list), {}
    for r in rows:
        key = tuple(r[k] for k in keys) + (r["attack"], r["eps"])
        groups[key].append(r["accuracy"])
        examples[key] = r.get("n_examples")
    out = []
    for key, values in groups.items():
        mean, se, n = mean_se(values)
        out.append({**dict(zip(list(keys) + ["attack", "eps"], key)), "mean": mean, "se": se, "n": n,
                    "n_examples": examples[key]})
    return out


def paired(rows, ref: str, arm: str, attack: str, eps: float) -> dict:
    """Seed-paired difference (arm − ref) in accuracy: runs sharing a seed share initialization,
    data order and (on the embedded digits) the test images."""
    acc = {(r["arm"], r["seed"]): r["accuracy"] for r in rows if r["attack"] == attack and r["eps"] == eps}
    seeds = sorted({s for (_, s) in acc if (ref, s) in acc and (arm, s) in acc})
    diffs = [acc[(arm, s)] - acc[(ref, s)] for s in seeds]
    n = len(diffs)
    if not n:
        return {"n": 0}
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else float("nan")
    se = sd / math.sqrt(n) if n > 1 else float("nan")
    if n > 1 and sd < 1e-9:  # every seed gave the same difference (to rounding): an interval of width 0
        # is no evidence, whatever the t-test says; accuracies differ by ≥ 1/n_examples when they differ
        return {"n": n, "mean": mean, "sd": sd, "se": se, "half": float("nan"), "mde": float("nan"),
                "beyond": False, "no_spread": True}
    half = t_quantile(0.975, n - 1) * se if n > 1 else float("nan")
    return {"n": n, "mean": mean, "sd": sd, "se": se, "half": half, "mde": mde(sd, n),
            "beyond": n > 1 and abs(mean) > half, "no_spread": False}


def fmt(mean, se):
    """``mean ± se`` in points (just the mean when the SE is NaN)."""
    return f"{100 * mean:.2f} ± {100 * se:.2f}" if not math.isnan(se) else f"{100 * mean:.2f}"


def pts(value):
    """A signed difference in points, ``—`` when there is none."""
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:+.2f}"
