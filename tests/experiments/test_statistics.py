"""odezoo.experiments.statistics: mean ± SE, seed-paired Student-t intervals, minimum detectable effect."""
import math

import pytest

pytest.importorskip("scipy")

from odezoo.experiments import statistics  # noqa: E402


def test_statistics_use_scipy():
    from scipy import stats

    mean, se, n = statistics.mean_se([0.5, 0.7, 0.6])
    assert (round(mean, 12), round(se, 12), n) == (0.6, round(0.1 / 3 ** 0.5, 12), 3)
    assert statistics.t_quantile(0.975, 2) == pytest.approx(4.302653, rel=1e-6)
    sd, n = 0.02, 8
    expected = (stats.t.ppf(0.975, 7) + stats.t.ppf(0.8, 7)) * sd / math.sqrt(8)
    assert statistics.mde(sd, n) == pytest.approx(expected)
    assert math.isnan(statistics.mde(sd, 1))
    rows = [{"arm": a, "seed": s, "attack": "fgsm", "eps": 0.1, "accuracy": v}
            for a, s, v in [("ref", 0, 0.5), ("x", 0, 0.6), ("ref", 1, 0.4), ("x", 1, 0.45), ("ref", 2, 0.5),
                            ("x", 2, 0.58)]]
    d = statistics.paired(rows, "ref", "x", "fgsm", 0.1)
    assert d["n"] == 3 and d["mean"] == pytest.approx((0.1 + 0.05 + 0.08) / 3)
    assert d["half"] == pytest.approx(statistics.t_quantile(0.975, 2) * d["se"])
    assert d["beyond"] and not d["no_spread"]


@pytest.mark.parametrize("ref, arm", [((0.88, 0.845), (0.845, 0.81)), ((0.3, 0.7, 0.1), (0.2, 0.6, 0.0)),
                                      ((0.5, 0.5), (0.5, 0.5))])
def test_a_difference_every_seed_shares_is_not_called_significant(ref, arm):
    """n seeds with one and the same difference (to float rounding) give sd 0 and an interval of
    width 0: no evidence, so no `*`, no interval and no MDE (a t-test would call any mean beyond it)."""
    rows = [{"arm": a, "seed": s, "attack": "fgsm", "eps": 0.1, "accuracy": v}
            for a, values in (("ref", ref), ("x", arm)) for s, v in enumerate(values)]
    d = statistics.paired(rows, "ref", "x", "fgsm", 0.1)
    assert d["no_spread"] and not d["beyond"]
    assert math.isnan(d["half"]) and math.isnan(d["mde"])
    assert d["mean"] == pytest.approx(sum(arm) / len(arm) - sum(ref) / len(ref))


def test_formatting_in_points():
    assert statistics.fmt(0.61234, 0.0123) == "61.23 ± 1.23"
    assert statistics.fmt(0.5, float("nan")) == "50.00"
    assert statistics.pts(-0.0125) == "-1.25" and statistics.pts(None) == "—" and statistics.pts(float("nan")) == "—"


def test_summarize_groups_seeds_of_an_arm():
    rows = [{"arm": "a", "seed": s, "attack": "pgd", "eps": 0.3, "accuracy": v, "n_examples": 1000}
            for s, v in enumerate((0.2, 0.4, 0.3))]
    (group,) = statistics.summarize(rows)
    assert group["arm"] == "a" and group["n"] == 3 and group["mean"] == pytest.approx(0.3)
    assert group["se"] == pytest.approx(0.1 / math.sqrt(3)) and group["n_examples"] == 1000
