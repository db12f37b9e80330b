"""The report of an experiment, rebuilt from its shipped files alone.

An experiment ships ``per_seed.csv`` (one row per model × attack × ε), ``protocol.json``,
``setup.json``, ``checks.csv`` and, for training curves, ``per_epoch.csv``.  From those files
only, [`build_report`][odezoo.experiments.report.build_report] writes ``summary.md`` (accuracy per ε with mean ± SE
over seeds,
seed-paired differences with 95 % intervals and minimum detectable effects next to the paper's
claimed effect, for accuracy against ε the best arm at each ε and its lead over the runner-up,
measured training cost, masking checks), ``summary.csv`` and the figure;
[`write_report`][odezoo.experiments.report.write_report] gathers every experiment's summary into one Markdown page.
"""
from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from pathlib import Path

from .io import atomic_write, save_csv
from .protocol import Protocol, eps_label
from .statistics import fmt, mean_se, paired, pts, summarize

__all__ = ["read_csv", "read_json", "build_report", "write_report", "START", "END", "REPORT_COMMAND", "ReportError",
           "REQUIRED_COLUMNS"]

#: how the shipped files are turned back into tables and figures (said in every summary)
REPORT_COMMAND = "odezoo report"

#: the columns each shipped CSV must have, and the key that must be unique in it
REQUIRED_COLUMNS = {
    "per_seed.csv": (("arm", "seed", "attack", "eps", "n_examples", "accuracy"), ("arm", "seed", "attack", "eps")),
    "checks.csv": (("arm", "seed", "check", "status"), ("arm", "seed", "check")),
    "per_epoch.csv": (("arm", "seed", "epoch", "accuracy"), ("arm", "seed", "epoch")),
}
_INTS = ("seed", "n_examples", "epoch", "epochs")
_FLOATS = ("eps", "accuracy", "train_seconds", "clean_accuracy")
_RATES = ("accuracy", "clean_accuracy")


class ReportError(ValueError):
    """A shipped results file the report cannot trust; the message names the file and the problem."""


def read_csv(path: Path) -> list[dict]:
    """The rows of a shipped CSV, validated, with seeds, counts and epochs as ints and rates as floats.

    Refused with [`ReportError`][odezoo.experiments.report.ReportError] naming the file: a file that is missing,
    not UTF-8 or not
    CSV; a missing required column (`REQUIRED_COLUMNS`); an empty or
    non-numeric value
    where a number belongs; NaN or infinity; an accuracy outside [0, 1]; a row whose key
    ((arm, seed, attack, ε) in per_seed.csv) repeats another's — duplicated seeds would narrow
    every interval."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, strict=True)
            rows = list(reader)
            columns = reader.fieldnames or []
    except FileNotFoundError:
        raise ReportError(f"{path} is missing; run `odezoo reproduce EXPERIMENT --collect` to ship it") from None
    except IsADirectoryError:
        raise ReportError(f"{path} is a folder, not a CSV file") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise ReportError(f"{path} is not a readable CSV file ({error}); ship it again with "
                          f"`odezoo reproduce EXPERIMENT --collect`") from None
    required, key = REQUIRED_COLUMNS.get(path.name, ((), ()))
    missing = [c for c in required if c not in columns]
    if missing:
        raise ReportError(f"{path} lacks the column(s) {', '.join(missing)} (it has: {', '.join(columns) or 'none'})")
    seen = {}
    for line, r in enumerate(rows, start=2):
        if None in r or any(v is None for v in r.values()):
            raise ReportError(f"{path}, line {line}: the row has {'more' if None in r else 'fewer'} fields than "
                              f"the header")
        for k in _INTS + _FLOATS:
            if r.get(k) in (None, ""):
                if k in required:
                    raise ReportError(f"{path}, line {line}: {k} is empty")
                continue
            try:
                value = float(r[k])
            except ValueError:
                raise ReportError(f"{path}, line {line}: {k} = {r[k]!r} is not a number") from None
            if not math.isfinite(value):
                raise ReportError(f"{path}, line {line}: {k} is {r[k]} (a result must be a finite number)")
            if k in _INTS:
                if value != int(value):
                    raise ReportError(f"{path}, line {line}: {k} = {r[k]!r} is not a whole number")
                value = int(value)
            if k in _RATES and not 0 <= value <= 1:
                raise ReportError(f"{path}, line {line}: {k} = {r[k]} is outside [0, 1]")
            r[k] = value
        if key:
            ident = tuple(r[k] for k in key)
            if ident in seen:
                raise ReportError(f"{path}, lines {seen[ident]} and {line} repeat the same "
                                  f"({', '.join(key)}) = {ident}; a duplicated row would count a seed twice. "
                                  f"Ship the file again with `odezoo reproduce EXPERIMENT --collect`")
            seen[ident] = line
    return rows


def read_json(path: Path, required: tuple[str, ...] = ()) -> dict:
    """A shipped JSON file as a mapping; [`ReportError`][odezoo.experiments.report.ReportError] naming the file
    when it is missing,
    malformed or lacks one of the ``required`` keys."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path} is missing; run `odezoo reproduce EXPERIMENT --collect` to ship it") from None
    except IsADirectoryError:
        raise ReportError(f"{path} is a folder, not a JSON file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path} must hold a JSON object, not {type(data).__name__}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ReportError(f"{path} lacks the key(s) {', '.join(missing)}")
    return data


def build_report(results: Path, paper=None, command: str = REPORT_COMMAND) -> str:
    """Rebuild summary.md, summary.csv and the figure of one experiment from the files in
    ``results`` (per_seed.csv, protocol.json, setup.json, checks.csv, per_epoch.csv); return the
    Markdown.  ``paper``: what the paper reports for it — a sentence, or ``{arm: {attack: (mean,
    SE)}}``, whose differences are set beside ours; ``command`` rebuilds the report."""
    setup = read_json(results / "setup.json", ("experiment", "title", "scale", "dry_run", "arms", "stand_in"))
    try:
        protocol = Protocol.load(results / "protocol.json")
    except FileNotFoundError:
        raise ReportError(f"{results / 'protocol.json'} is missing") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ReportError(f"{results / 'protocol.json'} is not a valid protocol ({error})") from None
    rows = read_csv(results / "per_seed.csv")
    if not rows:
        raise ReportError(f"{results / 'per_seed.csv'} holds no rows")
    unknown_arms = sorted({r["arm"] for r in rows} - {a["label"] for a in setup["arms"]})
    if unknown_arms:
        raise ReportError(f"{results / 'per_seed.csv'} has rows of arm(s) {', '.join(unknown_arms)} that "
                          f"{results / 'setup.json'} does not list")
    checks = read_csv(results / "checks.csv") if (results / "checks.csv").exists() else []
    epochs = read_csv(results / "per_epoch.csv") if (results / "per_epoch.csv").exists() else []
    name = setup["experiment"]
    arms = [a["label"] for a in setup["arms"]]
    summary = summarize(rows)
    save_csv(results / "summary.csv", summary)
    seeds = sorted({r["seed"] for r in rows})
    n_test = max(r["n_examples"] for r in rows if r["attack"] == "clean")
    lines = [f"### {name} — {setup['scale']} scale{' (dry run: not a result)' if setup['dry_run'] else ''}", "",
             setup["title"] + ".", ""]
    if setup.get("missing"):
        lines += [f"> **Incomplete.** {len(setup['missing'])} model(s) had not finished when this was collected and "
                  f"are not in the tables: {', '.join(setup['missing'])}.", ""]
    if setup["stand_in"]:
        lines += ["> **Stand-in data.** These models never saw CIFAR-10: they were trained and attacked on MNIST "
                  "digits padded to 32×32×3. The numbers test the pipeline and the direction of an effect, not "
                  "CIFAR-10 accuracy, and cannot be set against the paper's CIFAR-10 values.", ""]
    lines += [f"* data: {setup['data']}",
              f"* model: {setup['model']}, {setup['epochs']} epochs, batch {setup['batch_size']}",
              "* arms: " + "; ".join(f"`{a['label']}` = {a['solver']}"
                                     + (f", {a['adversarial']} adversarial training" if a["adversarial"] != "none"
                                        else "") for a in setup["arms"]),
              f"* seeds: {seeds} — mean ± standard error over seeds, in %",
              _time_line(setup), "",
              protocol.describe(n_test), ""]
    # accuracy tables, one per eps
    attacks = ["clean"] + list(protocol.attack_names) + ["worst"]
    for eps in protocol.eps:
        counts = {a: next((s["n_examples"] for s in summary if s["attack"] == a and s["eps"] == eps), None)
                  for a in attacks[1:]}
        lines += [f"#### Test accuracy at ε = {eps_label(eps)} (%, mean ± SE over {_seeds(len(seeds))})", "",
                  "| arm | clean | " + " | ".join(f"`{a}`" for a in attacks[1:]) + " |",
                  "|---" * len(attacks) + "|---|"]
        for arm in arms:
            cells = []
            for a in attacks:
                e = 0.0 if a == "clean" else eps
                found = next((s for s in summary if s["arm"] == arm and s["attack"] == a and s["eps"] == e), None)
                cells.append(fmt(found["mean"], found["se"]) if found else "—")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines += ["", "Test images per model: clean " + f"{n_test:,}; "
                  + ", ".join(f"`{a}` {n:,}" for a, n in counts.items() if n is not None)
                  + ". `worst`: correct under every attack, per example, on the images every attack ran on.", ""]
    lines += _paired_section(setup, protocol, rows, paper)
    if setup.get("x_axis") == "eps":
        lines += _ranking_section(protocol, rows, arms)
    lines += _cost_section(setup, rows)
    lines += _checks_section(checks)
    if epochs:
        lines += ["#### Validation curves (figure)", "",
                  "The figure's per-epoch curves are **validation** accuracy (PGD 7 × 2/255 at ε = 0.3 on "
                  f"{'64' if setup['dry_run'] else '256'} validation digits, the paper's attack), not test accuracy; "
                  "the tables above are the protocol on test images after training.", ""]
    lines += [f"Paper: {_paper_text(paper)}", "",
              f"Data: `per_seed.csv`, `protocol.json`, `setup.json`"
              + (", `checks.csv`" if checks else "") + (", `per_epoch.csv`" if epochs else "")
              + f" in this folder. Regenerate the runs: `{setup['command']}`; the tables and figure from these "
                f"files alone: `{command}`.", ""]
    text = "\n".join(lines)
    atomic_write(results / "summary.md", text)
    _figure(name, setup, protocol, summary, epochs, results / f"{name}.png")
    return text


def _seeds(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


def _time_line(setup) -> str:
    launcher = setup.get("launcher", "in-process: one job at a time")
    threads = "" if "thread" in launcher else f"; {setup['threads']} CPU thread(s)"
    if setup["wall_minutes"] is None:  # shipped with --collect: no command ran the models
        text = (f"* gathered with `--collect` from the models earlier commands had finished ({launcher}{threads}; "
                f"{setup['device']}), so no one command's wall time applies")
    elif setup.get("models_run") is None:  # shipped before the count was recorded
        text = (f"* wall time of the command that shipped these results: {setup['wall_minutes']} min ({launcher}"
                f"{threads}; {setup['device']}; models finished by an earlier, interrupted run are reused and not "
                "counted in it)")
    else:
        total, ran = setup["models"], setup["models_run"]
        what = (f"for the {ran} of {total} models it ran" if ran else
                f"it ran none of the {total} models: an earlier run had finished them all")
        reused = (f"; the other {total - ran} were finished by an earlier run, reused and not counted in it"
                  if 0 < ran < total else "")
        text = (f"* wall time of the command that shipped these results: {setup['wall_minutes']} min, {what} "
                f"({launcher}{threads}; {setup['device']}{reused})")
    if setup.get("compute_minutes") is not None:
        text += f"; training and evaluation summed over the models: {setup['compute_minutes']} min"
    return text


def _paper_text(paper) -> str:
    if paper is None:
        return "—"
    if isinstance(paper, str):
        return paper
    return "; ".join(f"{arm}: " + ", ".join(f"{a} {m:.2f} ± {s:.2f}" for a, (m, s) in v.items())
                     for arm, v in paper.items()) + (" (CIFAR-10, mean ± SE over 3 seeds; the paper does not state "
                                                     "its CIFAR-10 PGD settings — its PGD column is set beside our "
                                                     "`pgd-7x2/255`, the paper's MNIST PGD)")


def _paired_section(setup, protocol, rows, paper) -> list[str]:
    ref = setup["reference"]
    arms = [a["label"] for a in setup["arms"] if a["label"] != ref]
    if not ref or not arms or ref not in {r["arm"] for r in rows}:
        return []
    lines = [f"#### Seed-paired differences against `{ref}` (points)", "",
             "Each cell: mean difference ± SE over seeds; `*` when it lies beyond the two-sided 95% Student-t "
             "interval; MDE: the smallest true difference a two-sided paired t-test at 5% would detect with 80% power "
             "given the observed spread, (t₀.₉₇₅,ₙ₋₁ + t₀.₈₀,ₙ₋₁)·sd/√n. With many cells, expect about one `*` in 20 "
             "by chance.", "",
             "| arm | attack | ε | difference | 95% interval | MDE (80% power) | paper's claimed effect |",
             "|---|---|---|---|---|---|---|"]
    paper = paper if isinstance(paper, dict) else None
    verdicts = []
    for arm in arms:
        for eps in protocol.eps:
            for attack in ["clean"] + list(protocol.attack_names) + ["worst"]:
                if attack == "clean" and eps != protocol.eps[0]:
                    continue
                e = 0.0 if attack == "clean" else eps
                d = paired(rows, ref, arm, attack, e)
                if not d["n"]:
                    continue
                claim = "—"
                if paper and attack in paper.get(arm, {}):
                    (m1, s1), (m0, s0) = paper[arm][attack], paper[ref][attack]
                    claim = f"{m1 - m0:+.2f} ({m0:.2f} ± {s0:.2f} → {m1:.2f} ± {s1:.2f})"
                    verdicts.append((attack, d, m1 - m0, s0, s1))
                lines.append(f"| {arm} | `{attack}` | {eps_label(e)} | {pts(d['mean'])} ± {100 * d['se']:.2f}"
                             f"{' *' if d['beyond'] else ''} (n = {d['n']}) | {_half(d)} | "
                             f"{'—' if math.isnan(d['mde']) else format(100 * d['mde'], '.2f')} | {claim} |")
    lines.append("")
    for attack, d, claim, s0, s1 in verdicts:
        gap = "inside" if abs(claim) < s0 + s1 else "outside"
        ours = ("reproduced in direction and beyond our 95% interval" if d["beyond"] and d["mean"] * claim > 0
                else "not reproduced at this scale" + (" (the data stand in for CIFAR-10)" if setup["stand_in"]
                                                       else ""))
        if d.get("no_spread"):
            power = "every seed gave the same difference, so there is no spread to test it against"
        elif math.isnan(d["mde"]):
            power = "too few seeds for a minimum detectable effect"
        else:
            power = (f"our MDE (95% / 80% power) is {100 * d['mde']:.2f} points, so an effect of the paper's size "
                     f"{'would' if abs(claim) >= 100 * d['mde'] else 'would not'} be detected reliably")
        lines.append(f"* `{attack}`: the paper's gain {claim:+.2f} points lies {gap} its own error bars "
                     f"(± {s0:.2f} and ± {s1:.2f}); ours {pts(d['mean'])} ± {100 * d['se']:.2f}: {ours}; {power}.")
    return lines + [""]


def _half(d) -> str:
    """The 95 % interval's half-width of a paired difference, or why there is none."""
    if d.get("no_spread"):
        return "— (every seed gave the same difference: no interval)"
    return "—" if math.isnan(d.get("half", float("nan"))) else f"± {100 * d['half']:.2f}"


def _ranking_section(protocol, rows, arms) -> list[str]:
    """Which arm is best under each attack at each ε, and whether its lead over the runner-up
    (seed-paired) lies beyond its 95 % interval: what a claim like "the best u is the same for
    every ε" needs."""
    attacks = [a.name for a in protocol.attacks if a.kind != "noise"] + ["worst"]  # noise is a baseline
    mean_of = {(s["arm"], s["attack"], s["eps"]): s["mean"] for s in summarize(rows)}
    table, verdicts = [], []
    for attack in attacks:
        winners, separated, ties = [], 0, 0
        for eps in protocol.eps:
            means = {arm: mean_of[(arm, attack, eps)] for arm in arms if (arm, attack, eps) in mean_of}
            if len(means) < 2:
                continue
            ranked = sorted(means, key=lambda a: (-means[a], arms.index(a)))
            best, second = ranked[0], ranked[1]
            if means[best] == means[second]:
                tied = [a for a in ranked if means[a] == means[best]]
                ties += 1
                table.append(f"| `{attack}` | {eps_label(eps)} | tie: {', '.join(tied)} | {100 * means[best]:.2f} | "
                             "— | — | — |")
                continue
            d = paired(rows, second, best, attack, eps)
            winners.append((best, eps))
            separated += bool(d.get("beyond"))
            half = _half(d)
            table.append(f"| `{attack}` | {eps_label(eps)} | {best} | {100 * means[best]:.2f} | {second} "
                         f"({100 * means[second]:.2f}) | {pts(d['mean'])}{' *' if d['beyond'] else ''} | {half} |")
        if not winners and not ties:
            continue
        if not winners:
            verdicts.append(f"* `{attack}`: every ε is a tie.")
            continue
        by_arm = defaultdict(list)
        for arm, eps in winners:
            by_arm[arm].append(eps_label(eps))
        tied = f" ({ties} ε tied)" if ties else ""
        if len(winners) == 1 and ties:
            same = f"only ε = {by_arm[winners[0][0]][0]} has a single best arm, `{winners[0][0]}`{tied}"
        elif len(by_arm) == 1:
            same = f"the best arm is `{winners[0][0]}` at every ε{' that has one' if ties else ''}{tied}"
        else:
            same = "the best arm changes with ε: " + "; ".join(
                f"`{arm}` at {', '.join(e)}" for arm, e in by_arm.items()) + tied
        verdicts.append(f"* `{attack}`: {same}; its lead over the runner-up lies beyond the 95% interval at "
                        f"{separated} of {len(winners)} ε.")
    if not table:
        return []
    return ["#### Best arm at each ε", "",
            "The arm with the highest mean accuracy under each attack, and its seed-paired lead over the runner-up "
            "(`*`: beyond the two-sided 95% Student-t interval). The best arm is picked after seeing the data, so "
            "its lead is biased upward and the interval is optimistic: a lead inside it means the ranking is not "
            "established, and one beyond it is weaker evidence than a comparison fixed in advance.", "",
            "| attack | ε | best arm | mean (%) | runner-up (mean, %) | lead (points) | 95% interval |",
            "|---|---|---|---|---|---|---|", *table, "", *verdicts, ""]


def _cost_section(setup, rows) -> list[str]:
    ref = setup["reference"]
    seconds = {(r["arm"], r["seed"]): r["train_seconds"] for r in rows if r["attack"] == "clean"}
    arms = [a["label"] for a in setup["arms"]]
    lines = ["#### Training cost, measured (wall seconds per run, from metrics.jsonl)", "",
             "| arm | seconds (mean ± SE) | ratio to `" + str(ref) + "` per seed (mean ± SE, min–max) |",
             "|---|---|---|"]
    for arm in arms:
        values = [v for (a, _), v in seconds.items() if a == arm]
        if not values:
            continue
        mean, se, _ = mean_se(values)
        ratios = [seconds[(arm, s)] / seconds[(ref, s)] for (a, s) in seconds
                  if a == arm and (ref, s) in seconds and seconds[(ref, s)] > 0]
        ratio = "—"
        if ratios and arm != ref:
            rm, rs, _ = mean_se(ratios)
            ratio = (f"{rm:.3f}" + (f" ± {rs:.3f}" if not math.isnan(rs) else "")
                     + f" ({min(ratios):.3f}–{max(ratios):.3f})")
        lines.append(f"| {arm} | {mean:.1f}" + (f" ± {se:.1f}" if not math.isnan(se) else "") + f" | {ratio} |")
    launcher = setup.get("launcher", "in-process: one job at a time")
    return lines + ["", f"Same seeds, same machine ({launcher}; {_load_note(setup, arms)}); the ratio is the "
                        "measured cost of the arm relative to the reference (1.000 = no extra cost).", ""]


def _load_note(setup, arms) -> str:
    """Which arms shared the machine's load while they trained, i.e. which ratios compare like with like."""
    # Runs shipped before setup.json recorded the order queued every seed of one arm, then the next.
    if setup.get("job_order") != "seed-major":
        return ("every seed of one arm queued before the next arm, so with parallel jobs the arms ran at different "
                "times and any change in the machine's load between them is in the ratio")
    jobs = setup.get("parallel_jobs")
    if jobs is None:  # setups written before parallel_jobs was recorded: read the launcher's description
        found = re.match(r"\w+: (\d+) jobs? at once", setup.get("launcher", ""))
        jobs = int(found.group(1)) if found else 1
    if jobs >= len(arms):
        return "a seed's arms queued side by side, so parallel jobs ran them under the same load"
    if jobs == 1:
        return ("one job at a time, so every arm trained at a different time and any change in the machine's load "
                "between them is in the ratio")
    return (f"a seed's arms queued in the order of this table, {jobs} jobs at a time, so each arm trained beside "
            "its neighbours in that order, not beside every other arm; a ratio to an arm further away in the queue "
            "also holds any change in the machine's load between them")


def _checks_section(checks) -> list[str]:
    if not checks:
        return ["Gradient-masking checks: not run (`--no-checks`).", ""]
    by_check = defaultdict(lambda: defaultdict(int))
    for c in checks:
        by_check[c["check"]][c["status"]] += 1
    n_models = len({(c["arm"], c["seed"]) for c in checks})
    lines = [f"#### Gradient-masking checks ({n_models} models, {checks[0]['n_examples']} test images each; "
             "details in `checks.csv`)", "", "| check | pass | warn | info |", "|---|---|---|---|"]
    for check, counts in by_check.items():
        lines.append(f"| {check} | {counts.get('pass', 0)} | {counts.get('warn', 0)} | {counts.get('info', 0)} |")
    warns = [c for c in checks if c["status"] == "warn"]
    lines.append("")
    for c in warns[:8]:
        lines.append(f"* WARN `{c['arm']}` seed {c['seed']}, {c['check']}: {c['detail']}")
    if len(warns) > 8:
        lines.append(f"* … and {len(warns) - 8} more WARN lines in `checks.csv`")
    return lines + ([""] if warns else [])


def _figure(name, setup, protocol, summary, epochs, path):
    from .plots import new_figure, save_figure

    arms = [a["label"] for a in setup["arms"]]
    paper_pgd = next((a for a in protocol.attack_names if a.startswith("pgd-7x")), None)
    shown = [a for a in ("clean", "fgsm", paper_pgd, "worst") if a]

    def get(arm, attack, eps):
        e = 0.0 if attack == "clean" else eps
        return next((s for s in summary if s["arm"] == arm and s["attack"] == attack and s["eps"] == e), None)

    def err(s):
        return 0 if s is None or math.isnan(s["se"]) else s["se"]

    if epochs:
        fig, axes = new_figure(figsize=(6, 4))
        ax = axes[0][0]
        for arm in arms:
            per = defaultdict(list)
            for r in epochs:
                if r["arm"] == arm:
                    per[r["epoch"]].append(r["accuracy"])
            xs = sorted(per)
            stats_ = [mean_se(per[x]) for x in xs]
            ys, se = [m for m, _, _ in stats_], [0 if math.isnan(s) else s for _, s, _ in stats_]
            ax.plot(xs, ys, marker="o", label=arm)
            ax.fill_between(xs, [y - s for y, s in zip(ys, se)], [y + s for y, s in zip(ys, se)], alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel("robust VALIDATION accuracy (PGD 7×2/255, ε=0.3)")
    elif setup["x_axis"] == "u":
        fig, axes = new_figure(figsize=(6, 4))
        ax = axes[0][0]
        eps = protocol.eps[-1]
        for attack in shown:
            points = sorted((float(a.split("=")[1]), get(a, attack, eps)) for a in arms)
            ax.errorbar([p for p, _ in points], [s["mean"] for _, s in points], yerr=[err(s) for _, s in points],
                        marker="o", capsize=3, label=attack if attack == "clean" else f"{attack} ε={eps_label(eps)}")
        ax.set_xlabel("u (rk2_u)")
        ax.set_ylabel("test accuracy")
    elif setup["x_axis"] == "eps":
        panels = [a for a in shown if a != "clean"]
        fig, axes = new_figure(len(panels), figsize=(4.5 * len(panels), 4))
        for ax, attack in zip(axes[0], panels):
            for arm in arms:
                xs = [0.0] + list(protocol.eps)
                ss = [get(arm, "clean", 0)] + [get(arm, attack, e) for e in protocol.eps]
                ax.errorbar(xs, [s["mean"] for s in ss], yerr=[err(s) for s in ss], marker="o", capsize=3, label=arm)
            ax.set_title(f"`{attack}`" + (" (per-example worst case)" if attack == "worst" else ""), fontsize=9)
            ax.set_xlabel("ε (0 = clean)")
            ax.set_ylabel("test accuracy")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
        ax = axes[0][0]
    else:
        eps = protocol.eps[0]
        fig, axes = new_figure(figsize=(max(6, 1.5 * len(arms)), 4))
        ax = axes[0][0]
        width = 0.8 / len(shown)
        for i, attack in enumerate(shown):
            vals = [get(arm, attack, eps) for arm in arms]
            ax.bar([j + width * (i - (len(shown) - 1) / 2) for j in range(len(arms))], [v["mean"] for v in vals],
                   width=width, yerr=[err(v) for v in vals], capsize=3, label=attack)
        ax.set_xticks(range(len(arms)), arms, fontsize=8)
        ax.set_ylabel(f"test accuracy (ε = {eps_label(eps)})")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    data = setup["data"] if not setup["stand_in"] else "STAND-IN: MNIST digits padded to 32×32×3 (not CIFAR-10)"
    fig.suptitle(f"{name}{' (dry run)' if setup['dry_run'] else ''} — {data}; protocol {protocol.full_name}; "
                 f"{_seeds(len(setup['seeds']))}", fontsize=8)
    save_figure(fig, path)


START, END = "<!-- generated:start -->", "<!-- generated:end -->"


def write_report(results_root: Path, page: Path, experiments, paper=None, command: str = REPORT_COMMAND,
                 rerun: str = "odezoo reproduce {name} --scale small") -> Path:
    """Rebuild every experiment of ``experiments`` found under ``results_root`` (per_seed.csv +
    protocol.json + setup.json) and put their summaries, in that order, into ``page`` between
    the generated markers; experiments without data are listed as not re-run, with ``rerun``.
    ``paper`` maps an experiment to what the paper reports (see
    [`build_report`][odezoo.experiments.report.build_report])."""
    text = page.read_text() if page.exists() else f"{START}\n{END}\n"
    if START not in text or END not in text:
        raise ReportError(f"{page} lacks the markers {START} / {END}")
    parts = []
    for name in experiments:
        folder = results_root / name
        if not (folder / "per_seed.csv").exists():
            parts.append(f"### {name}\n\nNot yet re-run under the protocol: `{rerun.format(name=name)}`.\n")
            continue
        body = build_report(folder, (paper or {}).get(name), command)
        try:
            rel = folder.resolve().relative_to(page.parent.resolve())
        except ValueError:
            rel = folder.resolve()
        parts.append(body + f"\n![{name}]({rel.as_posix()}/{name}.png)\n")
    head, rest = text.split(START, 1)
    page.write_text(head + START + "\n" + "\n".join(parts) + END + rest.split(END, 1)[1])
    return page
