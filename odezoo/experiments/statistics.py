"""Statistics for results over seeds: mean ± standard error, seed-paired differences with
Student-t intervals, the minimum detectable effect of a paired t-test from the noncentral t
distribution, Holm's correction across a claim's cells, and the verdict rule (``scipy.stats``).

Accuracies are fractions in [0, 1]; [`fmt`][odezoo.experiments.statistics.fmt] and
[`pts`][odezoo.experiments.statistics.pts] print them as points.

The verdict rule (docs/results.md says it in words) is [`verdict`][odezoo.experiments.statistics.verdict]
over the cells [`correct_cells`][odezoo.experiments.statistics.correct_cells] has corrected with Holm's step-down
procedure: every cell is a seed-paired difference (arm − reference) with a two-sided Student-t
test; the cell at Holm step i is tested at level α/(K − i + 1) and its interval is the Student-t
interval at that same level, so the interval lies beyond zero exactly when Holm rejects the cell.
"""
from __future__ import annotations

import math
from collections import defaultdict

__all__ = ["mean_se", "t_quantile", "t_power", "mde", "mde_approx", "seeds_needed", "summarize", "paired",
           "differences", "seed_differences", "t_test", "holm", "correct_cells", "verdict", "fmt", "pts", "round_shown",
           "REPRODUCED", "NOT_REPRODUCED", "NOT_TESTABLE", "NOT_RUN"]

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE, NOT_RUN = "reproduced", "not reproduced", "not testable here", "not run"


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


def _noncentral_power(nc: float, df: int, alpha: float) -> float:
    from scipy import stats

    crit = t_quantile(1 - alpha / 2, df)
    # the lower tail as the upper tail at −nc (scipy's cdf far in the left tail can return NaN)
    upper, lower = float(stats.nct.sf(crit, df, nc)), float(stats.nct.sf(crit, df, -nc))
    return (0.0 if math.isnan(upper) else upper) + (0.0 if math.isnan(lower) else lower)


def t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample (paired) t-test at level ``alpha`` with ``n`` pairs when
    the true mean difference is ``effect`` and the paired standard deviation ``sd``: the
    noncentral t with n − 1 degrees of freedom and noncentrality effect·√n/sd."""
    if n < 2 or not sd > 0:
        return float("nan")
    return _noncentral_power(abs(effect) * math.sqrt(n) / sd, n - 1, alpha)


def mde(sd: float, n: int, alpha: float = 0.05, power: float = 0.80) -> float:
    """Minimum detectable effect of a two-sided paired t-test at level ``alpha`` with ``power``,
    exact: the δ at which the noncentral t (n − 1 degrees of freedom, noncentrality δ·√n/sd) puts
    ``power`` beyond the two critical values ±t_{1−α/2, n−1}.  NaN for n < 2 or no spread."""
    from scipy import optimize

    if n < 2 or math.isnan(sd) or not sd > 0:
        return float("nan")
    df = n - 1
    high = max(1.0, mde_approx(1.0, n, alpha, power) * math.sqrt(n))
    while _noncentral_power(high, df, alpha) < power:
        high *= 2
    nc = optimize.brentq(lambda x: _noncentral_power(x, df, alpha) - power, 0.0, high, xtol=1e-12, rtol=1e-12)
    return nc * sd / math.sqrt(n)


def mde_approx(sd: float, n: int, alpha: float = 0.05, power: float = 0.80) -> float:
    """The usual approximation of [`mde`][odezoo.experiments.statistics.mde],
    (t_{1−α/2, n−1} + t_{power, n−1})·sd/√n: below the exact value, by about 5 % at 3 seeds and
    α = 0.05 and by more at a corrected level (kept to say how far off it is)."""
    if n < 2 or math.isnan(sd):
        return float("nan")
    return (t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


def seeds_needed(sd: float, effect: float | None, alpha: float = 0.05, power: float = 0.80,
                 limit: int = 10_000_000) -> int | None:
    """The fewest seeds (pairs) at which a two-sided paired t-test at level ``alpha`` detects a true
    difference ``effect`` with ``power``, given the paired standard deviation ``sd`` (noncentral t).
    None when it cannot be said: no effect (None or 0), no spread, or more than ``limit`` seeds."""
    if effect is None or effect == 0 or math.isnan(sd) or not sd > 0:
        return None

    def enough(n):
        return t_power(effect, sd, n, alpha) >= power

    low, high = 1, 2
    while not enough(high):
        low, high = high, high * 2
        if high > limit:
            return None
    while high - low > 1:  # power grows with n: bisect between a failing and a passing count
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


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


def differences(rows, ref: str, arm: str, attack: str, eps: float, value: str = "accuracy", **match) -> list:
    """The seed-paired differences (arm − ref) of ``value`` over the seeds both arms ran, in seed
    order; ``match`` narrows the rows further (``epoch=3``)."""
    return [d for _, d in seed_differences(rows, ref, arm, attack, eps, value, **match)]


def seed_differences(rows, ref: str, arm: str, attack: str, eps: float, value: str = "accuracy",
                     **match) -> list[tuple]:
    """(seed, arm − ref) for every seed both arms ran, in seed order (see `differences`)."""
    acc = {(r["arm"], r["seed"]): r[value] for r in rows if r["attack"] == attack and r["eps"] == eps
           and all(r.get(k) == v for k, v in match.items())}
    seeds = sorted({s for (_, s) in acc if (ref, s) in acc and (arm, s) in acc})
    return [(s, acc[(arm, s)] - acc[(ref, s)]) for s in seeds]


def t_test(diffs) -> dict:
    """A two-sided one-sample Student-t test of mean zero on ``diffs``: n, mean, sd, se, t, p.
    ``no_spread`` when every difference is the same (to rounding): an interval of width 0 is no
    evidence, whatever the t statistic says, so p is NaN then (as for n < 2)."""
    from scipy import stats

    n = len(diffs)
    if not n:
        return {"n": 0}
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else float("nan")
    se = sd / math.sqrt(n) if n > 1 else float("nan")
    no_spread = n > 1 and sd < 1e-9  # accuracies differ by >= 1/n_examples when they differ
    if n < 2 or no_spread:
        return {"n": n, "mean": mean, "sd": sd, "se": se, "t": float("nan"), "p": float("nan"),
                "no_spread": no_spread}
    t = mean / se
    return {"n": n, "mean": mean, "sd": sd, "se": se, "t": t, "p": float(2 * stats.t.sf(abs(t), n - 1)),
            "no_spread": False}


def paired(rows, ref: str, arm: str, attack: str, eps: float) -> dict:
    """Seed-paired difference (arm − ref) in accuracy with its uncorrected two-sided 95 % interval
    and exact MDE: runs sharing a seed share initialization, data order and (on the embedded
    digits) the test images."""
    d = t_test(differences(rows, ref, arm, attack, eps))
    if not d["n"]:
        return d
    if d["no_spread"]:
        return {**d, "half": float("nan"), "mde": float("nan"), "beyond": False}
    half = t_quantile(0.975, d["n"] - 1) * d["se"] if d["n"] > 1 else float("nan")
    return {**d, "half": half, "mde": mde(d["sd"], d["n"]),
            "beyond": d["n"] > 1 and abs(d["mean"]) > half}


def holm(pvalues, alpha: float = 0.05) -> list[dict]:
    """Holm's step-down procedure over K p-values (NaN = untestable, ordered last, never rejected).

    Sort the p-values; at step i (1-based) compare the i-th smallest with α/(K − i + 1); reject
    and go on while it is smaller, stop at the first that is not.  Returns, in the input order,
    ``{"step", "level", "p_adjusted", "rejected"}``: the cell's step, the level it was tested at
    (cells after the stop share the stopping step's level α/(K − r), r = cells rejected) and
    Holm's adjusted p-value min(1, max_{j ≤ i} (K − j + 1)·p_(j))."""
    k = len(pvalues)
    order = sorted(range(k), key=lambda i: (math.isnan(pvalues[i]), pvalues[i] if not math.isnan(pvalues[i])
                                            else 0.0, i))
    out, running, stopped_at = [None] * k, 0.0, None
    for step, i in enumerate(order, start=1):
        p = pvalues[i]
        level = alpha / (k - step + 1)
        if math.isnan(p):
            adjusted = float("nan")
        else:
            running = max(running, min(1.0, (k - step + 1) * p))
            adjusted = running
        if stopped_at is None and not (p < level):  # NaN compares False: untestable cells stop Holm
            stopped_at = step
        rejected = stopped_at is None
        out[i] = {"step": step, "level": level if rejected else alpha / (k - stopped_at + 1),
                  "p_adjusted": adjusted, "rejected": rejected}
    return out


def correct_cells(cells, alpha: float = 0.05) -> list[dict]:
    """Holm-correct a claim's K cells and attach to each its corrected interval, MDE and seeds needed.

    ``cells``: mappings with ``diffs`` (the seed-paired differences), ``paper`` (the paper's effect
    for the cell in the same units, or None) and ``direction`` (+1, −1, 0 for none, or "either").
    Each returned cell adds the t-test, Holm's step, level and adjusted p-value, ``low``/``high``
    (the Student-t interval at the level the cell was tested at; NaN when there is no spread),
    ``beyond`` (+1 / −1 when that interval lies wholly above / below zero, else 0),
    ``excludes_paper`` (None without a paper effect or an interval), ``mde`` and ``seeds_needed``
    at α/K — Holm's first, Bonferroni, level, the one a cell must meet for Holm to reject anything."""
    tested = [{**c, **t_test(c["diffs"])} for c in cells]
    k = len(tested)
    for c, h in zip(tested, holm([c.get("p", float("nan")) for c in tested], alpha)):
        c.update(h, k=k)
        if c["n"] > 1 and not c["no_spread"]:
            half = t_quantile(1 - c["level"] / 2, c["n"] - 1) * c["se"]
            c["low"], c["high"] = c["mean"] - half, c["mean"] + half
        else:
            c["low"] = c["high"] = float("nan")
        c["beyond"] = 1 if c["low"] > 0 else -1 if c["high"] < 0 else 0  # NaN compares False: 0
        paper = c.get("paper")
        c["excludes_paper"] = None if paper is None or math.isnan(c["low"]) else not c["low"] <= paper <= c["high"]
        c["mde"] = mde(c["sd"], c["n"], alpha / k) if c["n"] > 1 else float("nan")
        c["seeds_needed"] = seeds_needed(c["sd"], paper, alpha / k) if c["n"] > 1 else None
    return tested


def _agrees(cell) -> bool:
    """The cell's corrected interval lies beyond zero on the side the paper's effect points to."""
    direction = cell.get("direction")
    return cell["beyond"] != 0 and (direction == "either" or direction == cell["beyond"])


def verdict(cells, require: str = "any", consistent_by: str | None = None) -> dict:
    """The verdict of a claim from its tested cells ([`correct_cells`][odezoo.experiments.statistics.correct_cells]).

    * *reproduced*: with ``require="any"``, at least one corrected interval lies beyond zero in
      the paper's direction; with ``require="all"``, every one does;
    * *not reproduced*: every corrected interval excludes the paper's effect (so the effect must
      be known in every cell);
    * *not testable here* otherwise; *not run* without cells.

    A claim that an ordering holds throughout ("stable over epochs") names the key its groups
    share in ``consistent_by``: it is reproduced when every corrected interval lies beyond zero
    and the intervals of each group all on one side, not reproduced when two intervals of one
    group lie beyond zero on opposite sides (the ordering reverses), not testable otherwise.

    Returns ``{"verdict", "agreeing", "k"}``: how many of the K cells lie beyond zero in the
    paper's direction (for an ordering claim: beyond zero at all)."""
    k = len(cells)
    if not k:
        return {"verdict": NOT_RUN, "agreeing": 0, "k": 0}
    if consistent_by is not None:
        sides = defaultdict(set)
        for c in cells:
            if c["beyond"]:
                sides[c[consistent_by]].add(c["beyond"])
        beyond = sum(bool(c["beyond"]) for c in cells)
        if any(len(s) == 2 for s in sides.values()):
            return {"verdict": NOT_REPRODUCED, "agreeing": beyond, "k": k}
        return {"verdict": REPRODUCED if beyond == k else NOT_TESTABLE, "agreeing": beyond, "k": k}
    agreeing = sum(_agrees(c) for c in cells)
    if agreeing == k if require == "all" else agreeing > 0:
        return {"verdict": REPRODUCED, "agreeing": agreeing, "k": k}
    if all(c["excludes_paper"] for c in cells):
        return {"verdict": NOT_REPRODUCED, "agreeing": agreeing, "k": k}
    return {"verdict": NOT_TESTABLE, "agreeing": agreeing, "k": k}


def round_shown(value: float, digits: int = 2) -> float:
    """``value`` as the tables show it: first to the 4 decimals claims.csv stores, then to
    ``digits``, halves away from zero — so a number printed from the raw data and the same number
    read back from claims.csv never differ in the last digit (−0.075 is −0.08 in both)."""
    from decimal import ROUND_HALF_UP, Decimal

    return float(Decimal(f"{value:.4f}").quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def fmt(mean, se):
    """``mean ± se`` in points (just the mean when the SE is NaN)."""
    if math.isnan(se):
        return f"{round_shown(100 * mean):.2f}"
    return f"{round_shown(100 * mean):.2f} ± {round_shown(100 * se):.2f}"


def pts(value):
    """A signed difference in points, ``—`` when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{round_shown(100 * value):+.2f}"
