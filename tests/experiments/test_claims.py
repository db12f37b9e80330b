"""The paper's claims as data, judged by one rule: claims.csv, the claims tables of README.md and
docs/results.md and every summary are rebuilt from the shipped docs/results/*/ files and must
match the committed ones byte for byte (a hand edit fails here); the verdict in every claims.csv
row follows from its own columns; setup differences are listed for every experiment."""
import csv
import json
import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("scipy")

from scipy import stats  # noqa: E402

from odezoo.experiments import report  # noqa: E402
from odezoo.experiments.commands import reproduce  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
SHIPPED = report.SHIPPED_INPUTS
SHIPPED_EXPERIMENTS = [name for name in reproduce.EXPERIMENTS if (RESULTS / name / "per_seed.csv").exists()]


def read(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """The shipped input files alone, copied to a fresh folder, and everything `odezoo report`
    writes rebuilt from them (figures left out: they are not compared)."""
    root = tmp_path_factory.mktemp("rebuilt")
    for name in SHIPPED_EXPERIMENTS:
        (root / "results" / name).mkdir(parents=True)
        for file in SHIPPED:
            if (RESULTS / name / file).exists():
                shutil.copy(RESULTS / name / file, root / "results" / name / file)
    shutil.copy(ROOT / "docs" / "results.md", root / "results.md")
    shutil.copy(ROOT / "README.md", root / "README.md")
    specs = {name: reproduce.load_experiment(name) for name in reproduce.EXPERIMENTS}
    report.write_report(root / "results", root / "results.md", reproduce.EXPERIMENTS,
                        {n: s.paper for n, s in specs.items()}, claims={n: s.claims for n, s in specs.items()},
                        differences={n: s.differences for n, s in specs.items()}, readme=root / "README.md",
                        figures=False)
    return root


@pytest.mark.parametrize("file", ["claims.csv", "summary.md", "summary.csv", "setup.json"])
@pytest.mark.parametrize("name", SHIPPED_EXPERIMENTS)
def test_every_generated_file_rebuilds_byte_for_byte(rebuilt, name, file):
    assert (rebuilt / "results" / name / file).read_bytes() == (RESULTS / name / file).read_bytes(), \
        f"docs/results/{name}/{file} is not what `odezoo report` writes from the shipped files: run it"


@pytest.mark.parametrize("page", ["results.md", "README.md"])
def test_the_pages_and_their_claims_tables_rebuild_byte_for_byte(rebuilt, page):
    committed = ROOT / ("docs/results.md" if page == "results.md" else "README.md")
    assert (rebuilt / page).read_text() == committed.read_text(), f"{committed} differs from `odezoo report`'s"
    text = committed.read_text()
    table = text.split(report.CLAIMS_START, 1)[1].split(report.CLAIMS_END, 1)[0]
    for name in SHIPPED_EXPERIMENTS:
        for cid, rows in report.read_claims(RESULTS / name / "claims.csv").items():
            (line,) = [line for line in table.splitlines() if line.startswith(f"| `{cid}`")]
            label = report.verdict_label(rows)
            assert label.startswith(rows[0]["verdict"]) and line.endswith(f"| **{label}** |")


def test_a_verdict_names_the_attacks_it_rests_on_and_the_stand_in():
    """The verdict column is the rule's word, plus what bounds it: a decision on accuracy names the
    attacks of its cells (a verdict under the paper's weak PGD says nothing about stronger attacks),
    and a verdict on stand-in data says so; an undecided claim names nothing more than the data."""
    cell = {"verdict": "reproduced", "unit": "points", "attack": "pgd-7x2/255", "warnings": "masking check `x` WARNs"}
    rows = [cell, {**cell, "attack": "fgsm"}, {**cell, "attack": "pgd-7x2/255"}]
    assert report.verdict_label(rows) == "reproduced under `pgd-7x2/255`, `fgsm`"
    stand_in = f"a | {report.STAND_IN_WARNING}, so the verdict assumes it | b"
    assert report.verdict_label([{**r, "verdict": "not reproduced", "warnings": stand_in} for r in rows]) == \
        "not reproduced under `pgd-7x2/255`, `fgsm` on the stand-in"
    assert report.verdict_label([{**cell, "verdict": "not testable here"}]) == "not testable here"
    assert report.verdict_label([{**cell, "verdict": "not testable here", "warnings": stand_in}]) == \
        "not testable here on the stand-in"
    ratio = {"verdict": "not reproduced", "unit": "ratio", "attack": "", "warnings": ""}
    assert report.verdict_label([ratio]) == "not reproduced"  # a cost claim has no attack


def test_a_readme_warning_keeps_its_meaning_when_shortened():
    """The README keeps each warning up to its first ' (': that part must still say what is wrong
    (it once read "a weaker attack set than `strong-v1` — standard AutoAttack", the opposite)."""
    for name in SHIPPED_EXPERIMENTS:
        for rows in report.read_claims(RESULTS / name / "claims.csv").values():
            for warning in filter(None, rows[0]["warnings"].split(" | ")):
                short = warning.split(" (")[0]
                assert not short.rstrip().endswith(("—", ":", "AutoAttack", ",")), warning
                if "did not run standard AutoAttack" in warning:
                    assert "did not run standard AutoAttack" in short
                if "picked after seeing the data" in warning:
                    assert "picked after seeing the data" in short


def test_the_claims_tables_come_from_claims_csv_alone(tmp_path):
    """Change a verdict in a claims.csv and only that file: the tables follow it."""
    claims = {name: report.read_claims(RESULTS / name / "claims.csv") for name in SHIPPED_EXPERIMENTS}
    name, grouped = next((n, g) for n, g in claims.items() if g)
    cid = next(iter(grouped))
    grouped[cid] = [{**r, "verdict": "edited by hand"} for r in grouped[cid]]
    assert any("**edited by hand**" in line and f"`{cid}`" in line for line in report.claims_table(claims))
    assert any("**edited by hand**" in line for line in report.claims_table(claims, readme=True))


def reverdict(rows):
    """The verdict rule re-applied to one claim's claims.csv columns, independently of the code."""
    k = int(rows[0]["K"])
    beyond = [r["beyond_zero"] for r in rows]
    if rows[0]["direction"] == "consistent":
        sides = {}
        for r in rows:
            if r["beyond_zero"] != "no":
                sides.setdefault(r["arm"], set()).add(r["beyond_zero"])
        if any(len(s) == 2 for s in sides.values()):
            return "not reproduced", sum(b != "no" for b in beyond)
        return ("reproduced" if all(b != "no" for b in beyond) else "not testable here"), sum(b != "no" for b in beyond)
    agree = sum(r["beyond_zero"] != "no" and (r["direction"] == "either" or
                                             {"+": "above", "-": "below"}.get(r["direction"]) == r["beyond_zero"])
                for r in rows)
    if (agree == k) if rows[0]["require"] == "all" else agree > 0:
        return "reproduced", agree
    if all(r["excludes_paper"] == "yes" for r in rows):
        return "not reproduced", agree
    return "not testable here", agree


@pytest.mark.parametrize("name", SHIPPED_EXPERIMENTS)
def test_every_verdict_follows_from_its_rows(name):
    for cid, rows in report.read_claims(RESULTS / name / "claims.csv").items():
        assert len(rows) == int(rows[0]["K"]), cid
        assert len({r["verdict"] for r in rows}) == 1
        assert reverdict(rows) == (rows[0]["verdict"], int(rows[0]["agreeing"])), cid
        for r in rows:
            n, mean, sd, level = int(r["n"]), float(r["mean"]), float(r["sd"]), float(r["holm_level"])
            if not r["ci_low"]:
                continue
            half = stats.t.ppf(1 - level / 2, n - 1) * sd / math.sqrt(n)  # the interval at its Holm level
            assert float(r["ci_low"]) == pytest.approx(mean - half, rel=1e-3, abs=2e-4)
            assert float(r["ci_high"]) == pytest.approx(mean + half, rel=1e-3, abs=2e-4)
            zero = 1.0 if r["unit"] == "ratio" else 0.0  # a ratio's "no effect" is 1
            assert (r["beyond_zero"] == "above") == (float(r["ci_low"]) > zero)
            assert (r["beyond_zero"] == "below") == (float(r["ci_high"]) < zero)
            if r["paper_effect"]:
                paper = float(r["paper_effect"])
                inside = float(r["ci_low"]) <= paper <= float(r["ci_high"])
                assert r["excludes_paper"] == ("no" if inside else "yes")


@pytest.mark.parametrize("name", SHIPPED_EXPERIMENTS)
def test_every_claim_finds_its_cells_in_the_shipped_data(name):
    """A renamed attack or arm would leave a claim without cells ("not run"): say so here."""
    for cid, rows in report.read_claims(RESULTS / name / "claims.csv").items():
        assert rows[0]["verdict"] != "not run" and int(rows[0]["K"]) >= 1, (name, cid, rows[0]["context"])


def test_cost_claims_use_every_seed_that_ran():
    for name in ("table1", "table2"):
        rows = [r for r in read(RESULTS / name / "claims.csv") if r["measure"] == "train_seconds_ratio"]
        assert rows, name
        per_seed = [r for r in read(RESULTS / name / "per_seed.csv") if r["attack"] == "clean"]
        seconds = {(r["arm"], int(r["seed"])): float(r["train_seconds"]) for r in per_seed}
        ratios = [seconds[("smoothing", s)] / seconds[("standard", s)] for (a, s) in seconds if a == "standard"]
        (row,) = rows
        assert int(row["n"]) == len(ratios) == len({s for _, s in seconds})
        assert float(row["mean"]) == pytest.approx(sum(ratios) / len(ratios), abs=1e-4)


def test_the_tables_effects_are_the_papers_table_differences():
    """The claimed effects of Tables 1 and 2 are the differences of the paper's own numbers."""
    for name in ("table1", "table2"):
        spec = reproduce.load_experiment(name)
        (claim,) = [c for c in spec.claims if c["measure"] == "accuracy"]
        for attack, effect in claim["effect"].items():
            paper = round(spec.paper["smoothing"][attack][0] - spec.paper["standard"][attack][0], 2)
            assert effect == pytest.approx(paper)


@pytest.mark.parametrize("name", reproduce.EXPERIMENTS)
def test_every_experiment_lists_how_it_differs_from_the_paper(name):
    spec = reproduce.load_experiment(name)
    assert spec.differences and all(all(d[k].strip() for k in report.DIFFERENCE_KEYS) for d in spec.differences)
    if (RESULTS / name / "setup.json").exists():
        shipped = json.loads((RESULTS / name / "setup.json").read_text())["differences"]
        assert [d["aspect"] for d in shipped] == [d["aspect"] for d in spec.differences]
        assert not any("{" in d[k] for d in shipped for k in report.DIFFERENCE_KEYS)  # every placeholder filled


def test_a_missing_u_stays_a_listed_difference():
    """fig3a's grid lacks the paper's u = 0.05 until results with it ship: the difference says so."""
    arms = {r["arm"] for r in read(RESULTS / "fig3a" / "per_seed.csv")}
    aspects = [d["aspect"] for d in reproduce.load_experiment("fig3a").differences]
    assert ("u=0.05" in arms) or "the u grid" in aspects


EXAMPLE = """\
title: "MNIST: two u"
data: mnist
eps: [0.3]
reference: u=1
x_axis: u
seeds: 3
paper: not in the paper.
arms:
  - {label: u=0.5, solver: {mode: fixed, method: rk2_u, params: {u: 1/2}}}
  - {label: u=1, solver: {mode: fixed, method: rk2_u, params: {u: 1}}}
dry_run:
  arms: [u=1]
claims:
  - {id: c, claim: "u matters", source: "Fig. 9", attacks: [fgsm], effect_by: arm, effect: {u=0.5: 2.5}}
differences:
  - {aspect: seeds, paper: "9", here: "{n_seeds}", effect: "wider intervals"}
"""


def test_claims_and_differences_load_from_the_experiment_file(tmp_path):
    (tmp_path / "two_u.yaml").write_text(EXAMPLE)
    spec = reproduce.load_experiment("two_u", tmp_path)
    (claim,) = spec.claims
    assert claim["effect"] == {"u=0.5": 2.5} and claim["require"] == "any" and claim["measure"] == "accuracy"
    assert spec.differences == ({"aspect": "seeds", "paper": "9", "here": "{n_seeds}", "effect": "wider intervals"},)


@pytest.mark.parametrize("change, expected", [
    (("source: \"Fig. 9\", ", ""), "id, claim and source required"),
    (("attacks: [fgsm], ", "attacks: [fgsm], arms: [u=7], "), "not all among the arms"),
    (("effect: {u=0.5: 2.5}", "effect: {u=0.5: lots}"), "is not a number"),
    (("effect_by: arm, ", ""), "needs effect_by"),
    (("attacks: [fgsm], ", ""), "give the attacks"),
    (("{id: c,", "{id: c, direction: up,"), "direction is one of"),
    (('here: "{n_seeds}"', 'here: "{n_runs}"'), "unknown placeholder"),
    (("  - {aspect: seeds", "  - mnist-big\n  - {aspect: seeds"), "no shared group 'mnist-big'"),
])
def test_a_bad_claim_or_difference_is_refused_naming_the_file(refused_experiment, change, expected):
    refused_experiment(EXAMPLE.replace(*change), expected)


def test_a_claim_is_judged_on_hand_built_results(tmp_path):
    """A claim whose arm beats the reference far beyond the noise is reproduced in 1 of 1 cell;
    masking WARNs on its models and stand-in data are recorded; claims.csv states it all."""
    seeds = range(4)
    rows = [{"arm": arm, "seed": s, "attack": attack, "eps": eps, "n_examples": 100,
             "accuracy": base + (0.10 + 0.004 * (s % 2) if arm == "x" and attack != "clean" else 0) + 0.01 * s,
             "train_seconds": 10.0}
            for arm in ("ref", "x") for s in seeds for attack, eps, base in (("clean", 0.0, 0.9), ("fgsm", 0.1, 0.5),
                                                                               ("worst", 0.1, 0.3))]
    checks = [{"arm": "x", "seed": 1, "check": "reaches-chance", "status": "warn"}]
    setup = {"scale": "small", "reference": "ref", "stand_in": True, "arms": [{"label": "ref"}, {"label": "x"}]}

    class Protocol:
        full_name, attacks = "p-v1", ()

    (claim,) = report.parse_claims([{"id": "k", "claim": "x helps", "source": "Table 9: +5", "attacks": ["fgsm"],
                                     "effect": 5}], "here", {"small": {"ref", "x"}, "paper": {"ref", "x"}})
    result = report.evaluate_claim(claim, setup, Protocol, rows, [], checks)
    assert result["verdict"] == "reproduced" and (result["agreeing"], result["k"]) == (1, 1)
    assert any("reaches-chance" in w and "x seed 1" in w for w in result["warnings"])
    assert any("stand-in" in w for w in result["warnings"])
    assert any("weaker attack set" in w for w in result["warnings"])
    assert any(c.startswith("`worst`") for c in result["context"])
    # beside the claim's own attack: its clean accuracy, and the same pair under the other attacks
    assert "clean accuracy on these arms, mean over seeds: 91.50 %" in result["context"]
    (other,) = [c for c in result["context"] if c.startswith("the same pairs under the protocol's other attacks")]
    assert "`worst` +10.20 (1 of 1 beyond" in other
    report.write_claims_csv(tmp_path / "claims.csv", report.claim_rows("e", result))
    (row,) = read(tmp_path / "claims.csv")
    assert row["verdict"] == "reproduced" and row["beyond_zero"] == "above" and row["excludes_paper"] == "yes"
    assert float(row["mean"]) == pytest.approx(10.2) and row["per_seed"].startswith("seed 0: +10.00; seed 1: +10.40")
    assert "**reproduced under `fgsm` on the stand-in**: 1 of 1 corrected interval beyond zero" in \
        report.verdict_sentence([row])

    # an arm the experiment file has and the shipped data lack is named, not silently left out of K;
    # the file's own warnings (a reference picked after seeing the data) are carried
    (claim,) = report.parse_claims([{"id": "k", "claim": "x helps", "source": "Table 9: +5", "attacks": ["fgsm"],
                                     "effect": 5, "warnings": ["reference picked after seeing the data"]}], "here",
                                   {"small": ["ref", "x", "y"], "paper": ["ref", "x"]})
    result = report.evaluate_claim(claim, setup, Protocol, rows, [], checks)
    assert result["k"] == 1 and "reference picked after seeing the data" in result["warnings"]
    assert any("y − ref (y is in the experiment file, not in these data)" in c for c in result["context"])
    with pytest.raises(ValueError, match="warnings is a list of sentences"):
        report.parse_claims([{"id": "k", "claim": "c", "source": "s", "attacks": ["fgsm"], "warnings": "one"}],
                            "here", {"small": ["ref"]})


def test_the_console_prints_each_model_in_the_results_schema():
    arm = reproduce.Arm("u=1", {"mode": "fixed", "method": "rk2_u", "params": {"u": 1.0}, "n_steps": 4})
    rows = [{"attack": "clean", "eps": 0.0, "n_examples": 1000, "accuracy": 0.97, "arm": "u=1", "seed": 0},
            {"attack": "pgd-7x2/255", "eps": 0.3, "n_examples": 1000, "accuracy": 0.6, "arm": "u=1", "seed": 0}]
    text = reproduce.per_model_table(rows, arm, 0, 61.0)
    assert "| model | solver | attack (setting) | ε | accuracy (images) | 95% interval |" in text
    assert "| u=1 seed 0 | rk2_u(u=1, 4 steps) | pgd-7x2/255 (PGD, 7 steps of 2/255, 1 random start) | 0.3 | " \
           "0.600 (1,000 images) |" in text
