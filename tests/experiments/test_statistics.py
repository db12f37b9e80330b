"""odezoo.experiments.statistics: mean ± SE, seed-paired Student-t intervals, the exact minimum
detectable effect (noncentral t), seeds needed, Holm's correction and the verdict rule — every
number checked against scipy.stats directly."""
import math

import pytest

pytest.importorskip("scipy")

from hypothesis import given, settings, strategies as st  # noqa: E402
from scipy import stats  # noqa: E402

from odezoo.experiments import statistics  # noqa: E402


def power_by_scipy(effect, sd, n, alpha):
    """The power of a two-sided one-sample t-test, straight from scipy's noncentral t."""
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    nc = effect * math.sqrt(n) / sd
    return stats.nct.sf(crit, n - 1, nc) + stats.nct.sf(crit, n - 1, -nc)  # P(T > c) + P(T < -c)


def test_statistics_use_scipy():
    mean, se, n = statistics.mean_se([0.5, 0.7, 0.6])
    assert (round(mean, 12), round(se, 12), n) == (0.6, round(0.1 / 3 ** 0.5, 12), 3)
    assert statistics.t_quantile(0.975, 2) == pytest.approx(4.302653, rel=1e-6)
    sd, n = 0.02, 8
    assert statistics.mde_approx(sd, n) == pytest.approx((stats.t.ppf(0.975, 7) + stats.t.ppf(0.8, 7)) * sd / 8 ** .5)
    assert math.isnan(statistics.mde(sd, 1)) and math.isnan(statistics.mde(0.0, 5))
    rows = [{"arm": a, "seed": s, "attack": "fgsm", "eps": 0.1, "accuracy": v}
            for a, s, v in [("ref", 0, 0.5), ("x", 0, 0.6), ("ref", 1, 0.4), ("x", 1, 0.45), ("ref", 2, 0.5),
                            ("x", 2, 0.58)]]
    d = statistics.paired(rows, "ref", "x", "fgsm", 0.1)
    assert d["n"] == 3 and d["mean"] == pytest.approx((0.1 + 0.05 + 0.08) / 3)
    assert d["half"] == pytest.approx(statistics.t_quantile(0.975, 2) * d["se"])
    assert d["beyond"] and not d["no_spread"]
    assert d["p"] == pytest.approx(stats.ttest_1samp([0.1, 0.05, 0.08], 0).pvalue)
    assert d["mde"] == pytest.approx(statistics.mde(d["sd"], 3))


@pytest.mark.parametrize("n, alpha", [(2, 0.05), (3, 0.05), (3, 0.025), (3, 0.05 / 6), (8, 0.05), (8, 0.025),
                                      (30, 0.01)])
def test_the_mde_is_exact_from_the_noncentral_t(n, alpha):
    sd = 0.093
    delta = statistics.mde(sd, n, alpha)
    assert power_by_scipy(delta, sd, n, alpha) == pytest.approx(0.80, abs=1e-9)
    assert power_by_scipy(0.99 * delta, sd, n, alpha) < 0.80
    # the (t + t) approximation is below it: the exact value is what the docs quote
    assert delta > statistics.mde_approx(sd, n, alpha) * (1 - 1e-3)


def test_the_approximation_is_about_five_percent_low_at_three_seeds():
    gap = statistics.mde(1.0, 3) / statistics.mde_approx(1.0, 3) - 1
    assert 0.04 < gap < 0.07
    assert statistics.mde(1.0, 8) / statistics.mde_approx(1.0, 8) - 1 < 0.01


@pytest.mark.parametrize("sd, effect, alpha", [(0.0945, 0.0097, 0.05), (0.0945, 0.0062, 0.025),
                                               (0.03, 0.022, 0.05 / 6), (0.0015, 0.0053, 0.025)])
def test_seeds_needed_is_the_fewest_seeds_with_80_percent_power(sd, effect, alpha):
    n = statistics.seeds_needed(sd, effect, alpha)
    assert n >= 2
    assert power_by_scipy(effect, sd, n, alpha) >= 0.80
    if n > 2:
        assert power_by_scipy(effect, sd, n - 1, alpha) < 0.80
    assert statistics.seeds_needed(sd, -effect, alpha) == n  # a two-sided test: the sign does not matter


def test_seeds_needed_says_when_it_cannot_be_said():
    assert statistics.seeds_needed(0.05, None) is None and statistics.seeds_needed(0.05, 0.0) is None
    assert statistics.seeds_needed(0.0, 0.01) is None and statistics.seeds_needed(float("nan"), 0.01) is None
    assert statistics.seeds_needed(1.0, 1e-6, limit=1000) is None


def test_holm_against_the_textbook():
    """K = 4: p = (0.01, 0.04, 0.03, 0.005); Holm compares 0.005 with 0.05/4, 0.01 with 0.05/3,
    0.03 with 0.05/2 (not smaller: stop)."""
    out = statistics.holm([0.01, 0.04, 0.03, 0.005])
    assert [o["rejected"] for o in out] == [True, False, False, True]
    assert [o["step"] for o in out] == [2, 4, 3, 1]
    assert [o["level"] for o in out] == pytest.approx([0.05 / 3, 0.05 / 2, 0.05 / 2, 0.05 / 4])
    assert [o["p_adjusted"] for o in out] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    (alone,) = statistics.holm([0.049])
    assert alone["rejected"] and alone["level"] == 0.05 and alone["p_adjusted"] == pytest.approx(0.049)
    nan = statistics.holm([float("nan"), 0.001])
    assert not nan[0]["rejected"] and nan[1]["rejected"] and nan[0]["step"] == 2


def cell(diffs, paper=None, direction=None, **extra):
    if direction is None:
        direction = "either" if paper is None else (paper > 0) - (paper < 0)
    return {"diffs": list(diffs), "paper": paper, "direction": direction, **extra}


def test_k_equal_one_is_the_plain_t_interval():
    diffs = [0.021, 0.034, 0.015, 0.027]
    (c,) = statistics.correct_cells([cell(diffs, 0.01)])
    low, high = stats.t.interval(0.95, 3, loc=sum(diffs) / 4, scale=stats.sem(diffs))
    assert (c["low"], c["high"]) == (pytest.approx(low), pytest.approx(high))
    assert c["level"] == 0.05 and c["k"] == 1
    assert c["mde"] == pytest.approx(statistics.mde(c["sd"], 4, 0.05))
    assert c["seeds_needed"] == statistics.seeds_needed(c["sd"], 0.01, 0.05)


def test_each_interval_is_at_the_level_holm_tested_its_cell():
    cells = statistics.correct_cells([cell([0.10, 0.12, 0.11]), cell([0.02, -0.01, 0.03]),
                                       cell([0.05, 0.06, 0.045])])
    for c in cells:
        half = stats.t.ppf(1 - c["level"] / 2, 2) * c["se"]
        assert c["high"] - c["mean"] == pytest.approx(half)
        assert (c["beyond"] != 0) == c["rejected"]
        assert c["mde"] == pytest.approx(statistics.mde(c["sd"], 3, 0.05 / 3))  # α/K: Holm's first level


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(-0.2, 0.2, allow_nan=False), min_size=3, max_size=8), min_size=1, max_size=6))
def test_an_interval_lies_beyond_zero_exactly_when_holm_rejects(samples):
    cells = statistics.correct_cells([cell(d) for d in samples])
    rejected = statistics.holm([c["p"] for c in cells])
    for c, h in zip(cells, rejected):
        assert c["rejected"] == h["rejected"]
        if not c["no_spread"] and abs(c["p"] - c["level"]) > 1e-9:  # away from the boundary itself
            assert (c["beyond"] != 0) == h["rejected"]


def test_an_effect_far_beyond_the_mde_is_reproduced():
    cells = statistics.correct_cells([cell([0.051, 0.049, 0.050, 0.052], 0.03), cell([0.0, 0.01, -0.01], 0.03)])
    v = statistics.verdict(cells)
    assert v == {"verdict": statistics.REPRODUCED, "agreeing": 1, "k": 2}
    assert cells[0]["mean"] > 3 * cells[0]["mde"]


def test_an_interval_holding_both_zero_and_the_paper_is_not_testable():
    cells = statistics.correct_cells([cell([0.05, -0.04, 0.02, -0.01], 0.01)])
    assert cells[0]["low"] < 0 < 0.01 < cells[0]["high"]
    assert statistics.verdict(cells)["verdict"] == statistics.NOT_TESTABLE


def test_every_interval_excluding_the_paper_is_not_reproduced():
    cells = statistics.correct_cells([cell([0.001, -0.001, 0.0005, 0.0], 0.05),
                                      cell([-0.002, 0.001, 0.0, 0.001], 0.02)])
    assert all(c["excludes_paper"] and c["beyond"] == 0 for c in cells)
    assert statistics.verdict(cells)["verdict"] == statistics.NOT_REPRODUCED
    # one cell that cannot exclude the paper's effect keeps the claim open
    wide = statistics.correct_cells([cell([0.001, -0.001, 0.0005, 0.0], 0.05), cell([0.1, -0.1, 0.05], 0.02)])
    assert statistics.verdict(wide)["verdict"] == statistics.NOT_TESTABLE


def test_a_significant_effect_against_the_paper_is_not_reproduced_nor_reproduced():
    cells = statistics.correct_cells([cell([-0.05, -0.051, -0.049, -0.052], 0.03)])
    assert cells[0]["beyond"] == -1
    assert statistics.verdict(cells)["verdict"] == statistics.NOT_REPRODUCED
    either = statistics.correct_cells([cell([-0.05, -0.051, -0.049, -0.052], None, "either")])
    assert statistics.verdict(either)["verdict"] == statistics.REPRODUCED  # "they differ": either side counts


def test_a_cell_without_spread_or_without_a_paper_effect_decides_nothing():
    floor = statistics.correct_cells([cell([0.0, 0.0, 0.0], 0.02)])
    assert floor[0]["no_spread"] and math.isnan(floor[0]["low"]) and floor[0]["excludes_paper"] is None
    assert statistics.verdict(floor)["verdict"] == statistics.NOT_TESTABLE
    unknown = statistics.correct_cells([cell([0.001, -0.001, 0.0005], None)])
    assert statistics.verdict(unknown)["verdict"] == statistics.NOT_TESTABLE
    assert statistics.verdict([])["verdict"] == statistics.NOT_RUN
    zero = statistics.correct_cells([cell([0.05, 0.051, 0.049], 0.0, 0)])  # the paper shows no difference here
    assert statistics.verdict(zero)["verdict"] == statistics.NOT_REPRODUCED


def test_a_claim_about_every_cell_needs_every_cell():
    cells = statistics.correct_cells([cell([0.05, 0.051, 0.049, 0.05], None, 1),
                                      cell([0.05, -0.05, 0.01, 0.0], None, 1)])
    assert statistics.verdict(cells, "any")["verdict"] == statistics.REPRODUCED
    assert statistics.verdict(cells, "all")["verdict"] == statistics.NOT_TESTABLE


def test_an_ordering_claim_is_contradicted_by_a_reversal():
    up, down = [0.05, 0.051, 0.049, 0.05], [-0.05, -0.051, -0.049, -0.05]
    same = statistics.correct_cells([cell(up, arm="a"), cell(up, arm="a"), cell(down, arm="b")])
    assert statistics.verdict(same, "all", "arm")["verdict"] == statistics.REPRODUCED
    flipped = statistics.correct_cells([cell(up, arm="a"), cell(down, arm="a")])
    assert statistics.verdict(flipped, "all", "arm")["verdict"] == statistics.NOT_REPRODUCED
    open_ = statistics.correct_cells([cell(up, arm="a"), cell([0.05, -0.05, 0.0], arm="a")])
    assert statistics.verdict(open_, "all", "arm")["verdict"] == statistics.NOT_TESTABLE


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
    assert statistics.pts(-0.0125) == "-1.25" and statistics.pts(None) == "—"
    assert statistics.pts(float("nan")) == "—"


def test_summarize_groups_seeds_of_an_arm():
    rows = [{"arm": "a", "seed": s, "attack": "pgd", "eps": 0.3, "accuracy": v, "n_examples": 1000}
            for s, v in enumerate((0.2, 0.4, 0.3))]
    (group,) = statistics.summarize(rows)
    assert group["arm"] == "a" and group["n"] == 3 and group["mean"] == pytest.approx(0.3)
    assert group["se"] == pytest.approx(0.1 / math.sqrt(3)) and group["n_examples"] == 1000


def test_paired_differences_keep_their_seeds():
    rows = [{"arm": a, "seed": s, "attack": "fgsm", "eps": 0.1, "accuracy": v, "epoch": e}
            for a, s, v, e in [("r", 0, 0.5, 1), ("x", 0, 0.6, 1), ("r", 2, 0.4, 1), ("x", 2, 0.3, 1),
                               ("x", 5, 0.9, 1), ("r", 0, 0.1, 2), ("x", 0, 0.2, 2)]]
    assert statistics.seed_differences(rows, "r", "x", "fgsm", 0.1, epoch=1) == [(0, pytest.approx(0.1)),
                                                                                  (2, pytest.approx(-0.1))]
    assert statistics.differences(rows, "r", "x", "fgsm", 0.1, epoch=2) == [pytest.approx(0.1)]
