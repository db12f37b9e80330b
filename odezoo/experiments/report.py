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
import io
import json
import math
import re
from collections import defaultdict
from pathlib import Path

from .io import atomic_write, save_csv, save_json
from .protocol import Protocol, eps_label
from .statistics import (NOT_REPRODUCED, NOT_RUN, REPRODUCED, correct_cells, fmt, mde, mde_approx, mean_se, paired,
                         pts, round_shown, summarize, verdict)

__all__ = ["SHIPPED_INPUTS", "read_csv", "read_json", "build_report", "write_report", "START", "END", "CLAIMS_START", "CLAIMS_END",
           "REPORT_COMMAND", "ReportError", "REQUIRED_COLUMNS", "parse_claims", "parse_differences",
           "evaluate_claim", "claim_rows", "read_claims", "claims_table", "verdict_sentence", "rule_text"]

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


def build_report(results: Path, paper=None, command: str = REPORT_COMMAND, claims=(), differences=(),
                 figure: bool = True) -> str:
    """Rebuild summary.md, summary.csv, claims.csv and the figure of one experiment from the files
    in ``results`` (per_seed.csv, protocol.json, setup.json, checks.csv, per_epoch.csv); return the
    Markdown.  ``paper``: what the paper reports for it — a sentence, or ``{arm: {attack: (mean,
    SE)}}``, whose differences are set beside ours; ``claims``: the paper's claims the experiment
    file lists (`parse_claims`), judged by the verdict rule into claims.csv; ``differences``: how
    the run differs from the paper (`parse_differences`), resolved into setup.json's
    ``differences``; ``command`` rebuilds the report; ``figure=False`` skips the PNG."""
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
    from_numbers = checks_from_accuracies(rows, protocol)
    cross = read_csv(results / "crosscheck.csv") if (results / "crosscheck.csv").exists() else []
    epochs = read_csv(results / "per_epoch.csv") if (results / "per_epoch.csv").exists() else []
    name = setup["experiment"]
    arms = [a["label"] for a in setup["arms"]]
    summary = summarize(rows)
    save_csv(results / "summary.csv", summary)
    if differences:
        setup["differences"] = resolve_differences(differences, setup, rows)
        save_json(results / "setup.json", setup)
    evaluated = [evaluate_claim(c, setup, protocol, rows, epochs, checks + from_numbers) for c in claims]
    write_claims_csv(results / "claims.csv", [row for e in evaluated for row in claim_rows(name, e)])
    grouped = read_claims(results / "claims.csv")
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
    lines += claims_section(grouped)
    lines += differences_section(setup.get("differences"))
    lines += _paired_section(setup, protocol, rows, paper)
    if setup.get("x_axis") == "eps":
        lines += _ranking_section(protocol, rows, arms)
    lines += _cost_section(setup, rows)
    lines += _checks_section(checks)
    lines += _checks_from_accuracies_section(from_numbers)
    lines += _crosscheck_section(cross)
    if epochs:
        lines += ["#### Validation curves (figure)", "",
                  "The figure's per-epoch curves are **validation** accuracy (PGD 7 × 2/255 at ε = 0.3 on "
                  f"{'64' if setup['dry_run'] else '256'} validation digits, the paper's attack), not test accuracy; "
                  "the tables above are the protocol on test images after training.", ""]
    lines += [f"Paper: {_paper_text(paper)}", "",
              f"Data: `per_seed.csv`, `protocol.json`, `setup.json`"
              + (", `checks.csv`" if checks else "") + (", `per_epoch.csv`" if epochs else "")
              + (", `crosscheck.csv`" if cross else "")
              + f" in this folder. Regenerate the runs: `{setup['command']}`; the tables and figure from these "
                f"files alone: `{command}`.", ""]
    text = "\n".join(lines)
    atomic_write(results / "summary.md", text)
    if figure:
        _figure(name, setup, protocol, summary, epochs, results / f"{name}.png")
    return text


def _seeds(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


#: the files an experiment ships, from which `odezoo report` rebuilds everything else
SHIPPED_INPUTS = ("per_seed.csv", "protocol.json", "setup.json", "checks.csv", "per_epoch.csv", "crosscheck.csv")


def _time_line(setup) -> str:
    launcher = setup.get("launcher", "in-process: one job at a time")
    if setup["wall_minutes"] is None:  # shipped with --collect: no command ran the models
        # (older collects recorded the collecting command's launcher, not the models': it is not shown)
        return (f"* gathered with `--collect` from the models earlier commands had finished ({setup['device']}), "
                "so no one command's wall time applies; how those commands launched the models is not recorded"
                + (f"; training and evaluation summed over the models: {setup['compute_minutes']} min"
                   if setup.get("compute_minutes") is not None else ""))
    threads = "" if "thread" in launcher else f"; {setup['threads']} CPU thread(s)"
    if setup.get("models_run") is None:  # shipped before the count was recorded
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
                     for arm, v in paper.items()) + " (CIFAR-10, mean ± SE over 3 seeds)"


def _paired_section(setup, protocol, rows, paper) -> list[str]:
    ref = setup["reference"]
    arms = [a["label"] for a in setup["arms"] if a["label"] != ref]
    if not ref or not arms or ref not in {r["arm"] for r in rows}:
        return []
    lines = [f"#### Every seed-paired difference against `{ref}` (points, uncorrected)", "",
             "Each cell: mean difference ± SE over seeds; `*` when it lies beyond the two-sided 95% Student-t "
             "interval of that cell alone, with no correction for the number of cells (expect about one `*` in 20 "
             "by chance: the claims above are judged with Holm's correction over their own cells); MDE: the "
             "smallest true difference a two-sided paired t-test at 5% detects with 80% power given the observed "
             "spread (noncentral t).", "",
             "| arm | attack | ε | difference | 95% interval | MDE (80% power) | the paper's arm − reference |",
             "|---|---|---|---|---|---|---|"]
    paper = paper if isinstance(paper, dict) else None
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
                if paper and attack in paper.get(arm, {}) and attack in paper.get(ref, {}):
                    (m1, s1), (m0, s0) = paper[arm][attack], paper[ref][attack]
                    claim = f"{m1 - m0:+.2f} ({m0:.2f} ± {s0:.2f} → {m1:.2f} ± {s1:.2f})"
                lines.append(f"| {arm} | `{attack}` | {eps_label(e)} | {pts(d['mean'])} ± {100 * d['se']:.2f}"
                             f"{' *' if d['beyond'] else ''} (n = {d['n']}) | {_half(d)} | "
                             f"{'—' if math.isnan(d['mde']) else format(100 * d['mde'], '.2f')} | {claim} |")
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
    attacks = [a.name for a in protocol.attacks if not a.baseline] + ["worst"]
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
    how = (f"{launcher}; {_load_note(setup, arms)}" if launcher else
           "gathered with `--collect`: how the models were launched, so which arms shared the machine's load, "
           "is not recorded")
    ran, total = setup.get("models_run"), setup.get("models")
    if launcher and ran is not None and total and ran < total:
        how += (f" — for the {ran} of {total} models this command ran; the other {total - ran} ran in earlier "
                "commands whose launch is not recorded here, so ratios involving them can mix launch conditions")
    return lines + ["", f"Same seeds, same machine ({how}); the ratio is the "
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


def checks_from_accuracies(rows, protocol) -> list[dict]:
    """The masking checks a model's accuracies allow by themselves, so every shipped experiment
    (whichever odezoo wrote its checks.csv) gets them: `attacks_above_clean_check` per model,
    attacks only (not the noise baseline, not `worst`).  Rows as checks.csv's, with ``source``."""
    from .masking import attacks_above_clean_check

    skip = {a.name for a in protocol.attacks if a.baseline} | {"clean", "worst"}
    models = list(dict.fromkeys((r["arm"], r["seed"]) for r in rows))
    out = []
    for arm, seed in models:
        mine = [r for r in rows if (r["arm"], r["seed"]) == (arm, seed)]
        clean = next((r for r in mine if r["attack"] == "clean"), None)
        if clean is None:
            continue
        check = attacks_above_clean_check((clean["accuracy"], clean["n_examples"]),
                                          {(r["attack"], r["eps"]): (r["accuracy"], r["n_examples"])
                                           for r in mine if r["attack"] not in skip})
        out.append({"arm": arm, "seed": seed, "check": check.name, "status": check.status, "detail": check.detail,
                    "n_examples": clean["n_examples"], "source": "per_seed.csv"})
    return out


def _checks_from_accuracies_section(checks) -> list[str]:
    if not checks:
        return []
    warns = [c for c in checks if c["status"] == "warn"]
    lines = [f"Checked from `per_seed.csv` (every model's accuracies): `attacks-not-above-clean` passes on "
             f"{len(checks) - len(warns)} of {len(checks)} models" + (", warns on:" if warns else "."), ""]
    lines += [f"* WARN `{c['arm']}` seed {c['seed']}: {c['detail']}" for c in warns]
    return lines + ([""] if warns else [])


def _crosscheck_section(cross) -> list[str]:
    """The attack libraries on one model's same images (crosscheck.csv), as measured."""
    if not cross:
        return []
    first = cross[0]
    lines = [f"#### Attack libraries on the same images (`crosscheck.csv`: `{first['arm']}` seed {first['seed']}, "
             f"the first {first['n_images']} test images, ε = {eps_label(first['eps'])})", "",
             "| check | library | accuracy (%) | max pixel difference to advertorch | images only this library "
             "fooled |", "|---|---|---|---|---|"]
    for r in cross:
        diff = r.get("max_pixel_difference_to_advertorch", "")
        only = r.get("images_only_this_library_fooled", "")
        lines.append(f"| {r['check']} | {r['library']} | {100 * float(r['accuracy']):.1f} | "
                     f"{'—' if diff in ('', None) else f'{float(diff):.1e}'} | {'—' if only in ('', None) else only} |")
    return lines + ["", "PGD runs from the clean image in every library (no random start), so the three must agree "
                        "to float precision; AutoAttack's components are randomized searches, so the two "
                        "implementations are compared by their accuracies and the images only one fooled.", ""]


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
            # an arm with no finished model yet (a partial --collect) has no point
            points = sorted((float(a.split("=")[1]), get(a, attack, eps)) for a in arms
                            if get(a, attack, eps) is not None)
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
                if any(s is None for s in ss):  # an arm with no finished model yet (a partial --collect)
                    continue
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


# ----------------------------------------------------------------------------- the paper's claims
#: the keys a claim in an experiment file may have (``id``, ``claim`` and ``source`` are required)
CLAIM_KEYS = ("id", "claim", "source", "attacks", "eps", "arms", "pairs", "reference", "effect", "effect_by",
              "direction", "require", "data", "measure", "context", "warnings")
_DIRECTIONS = {"increase": 1, "decrease": -1, "either": "either", "consistent": "either"}
#: the placeholders a setup difference may use, filled from the shipped files
DIFFERENCE_FIELDS = ("n_seeds", "epochs", "batch_size", "n_test", "n_autoattack", "data", "clean", "arms")
DIFFERENCE_KEYS = ("aspect", "paper", "here", "effect")
#: the verdict rule's level and power
ALPHA, POWER = 0.05, 0.80
#: claims.csv's columns, in order (one row per cell; the claim's own columns repeat on its cells)
CLAIM_COLUMNS = ("experiment", "claim", "claim_text", "paper_source", "measure", "unit", "require", "K", "correction",
                 "cell", "arm", "reference", "attack", "eps", "epoch", "n", "per_seed", "paper_effect", "direction",
                 "mean", "sd", "p", "holm_step", "holm_level", "p_holm", "ci_low", "ci_high", "beyond_zero",
                 "excludes_paper", "mde", "seeds_needed", "claim_mde_min", "claim_mde_max", "claim_seeds_needed",
                 "agreeing", "verdict", "warnings", "context")


def parse_claims(items, where: str, labels: dict) -> tuple:
    """The claims of an experiment file, checked: known keys, ids unique, arms and pairs among the
    arms of some scale (``labels``: scale -> arm labels), effects numbers in points; a
    ``ValueError`` naming ``where`` otherwise.  Returns plain mappings with the defaults filled in,
    and ``file_arms`` (scale -> the file's arm labels, in order: arms the shipped data lack are
    named in a claim's context)."""
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ValueError(f"{where}: claims must be a list")
    every = set().union(*map(set, labels.values()))
    seen, out = set(), []
    for item in items:
        if not isinstance(item, dict) or set(item) - set(CLAIM_KEYS) or not {"id", "claim", "source"} <= set(item):
            raise ValueError(f"{where}: a claim has the keys {', '.join(CLAIM_KEYS)} (id, claim and source "
                             f"required): {item!r}")
        claim = {k: item.get(k) for k in CLAIM_KEYS}
        cid = str(claim["id"])
        if cid in seen:
            raise ValueError(f"{where}: claim id {cid!r} repeats")
        seen.add(cid)
        claim["id"] = cid
        claim["measure"] = claim["measure"] or "accuracy"
        claim["data"] = claim["data"] or "per_seed"
        claim["require"] = claim["require"] or "any"
        if claim["measure"] not in ("accuracy", "train_seconds_ratio") or claim["data"] not in ("per_seed",
                                                                                                 "per_epoch"):
            raise ValueError(f"{where}: claim {cid}: measure is accuracy or train_seconds_ratio, data per_seed or "
                             f"per_epoch")
        if claim["require"] not in ("any", "all"):
            raise ValueError(f"{where}: claim {cid}: require is any or all, got {claim['require']!r}")
        warnings_ = claim["warnings"] or []
        if not (isinstance(warnings_, list) and all(isinstance(w, str) and w.strip() for w in warnings_)):
            raise ValueError(f"{where}: claim {cid}: warnings is a list of sentences (what qualifies its verdict, "
                             f"e.g. a reference arm picked after seeing the data)")
        claim["warnings"] = [w.strip() for w in warnings_]
        if claim["direction"] is not None and claim["direction"] not in _DIRECTIONS:
            raise ValueError(f"{where}: claim {cid}: direction is one of {', '.join(_DIRECTIONS)}")
        if claim["measure"] == "accuracy" and not (isinstance(claim["attacks"], list) and claim["attacks"]):
            raise ValueError(f"{where}: claim {cid}: give the attacks its cells use (protocol names)")
        effect = claim["effect"]
        if isinstance(effect, dict):
            if claim["effect_by"] not in ("arm", "attack"):
                raise ValueError(f"{where}: claim {cid}: an effect per cell needs effect_by: arm or attack")
            claim["effect"] = {str(k): _effect_number(v, where, cid) for k, v in effect.items()}
        elif effect is not None:
            claim["effect"] = _effect_number(effect, where, cid)
        pairs = claim["pairs"]
        if pairs is not None:
            pairs = pairs if isinstance(pairs, dict) else {"small": pairs, "paper": pairs}
            for scale, items_ in pairs.items():
                if scale not in labels or not isinstance(items_, list) or not all(
                        isinstance(p, list) and len(p) == 2 and {str(a) for a in p} <= set(labels[scale])
                        for p in items_):
                    raise ValueError(f"{where}: claim {cid}: pairs ({scale}) must be [arm, reference] pairs of the "
                                     f"{scale} arms")
            claim["pairs"] = {s: [[str(a), str(b)] for a, b in p] for s, p in pairs.items()}
        for key in ("arms",):
            if claim[key] is not None and not set(map(str, claim[key])) <= every:
                raise ValueError(f"{where}: claim {cid}: arms {claim[key]} are not all among the arms")
        if claim["reference"] is not None and str(claim["reference"]) not in every:
            raise ValueError(f"{where}: claim {cid}: the reference {claim['reference']!r} is not an arm")
        claim["file_arms"] = {scale: [str(a) for a in arms] for scale, arms in labels.items()}
        out.append(claim)
    return tuple(out)


def _effect_number(value, where, cid) -> float:
    from odezoo.parsing import parse_number

    try:
        return float(parse_number(value))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: claim {cid}: the paper's effect {value!r} is not a number (points)") from None


def parse_differences(items, where: str, groups: dict) -> tuple:
    """An experiment's setup differences: each item a group name of ``groups`` (shared entries) or
    a mapping with `DIFFERENCE_KEYS`, whose text may use the `DIFFERENCE_FIELDS` placeholders."""
    import string

    out = []
    for item in items or []:
        entries = groups.get(item) if isinstance(item, str) else [item]
        if entries is None:
            raise ValueError(f"{where}: differences: no shared group {item!r} (groups: {', '.join(groups)})")
        for entry in entries:
            if not isinstance(entry, dict) or set(entry) != set(DIFFERENCE_KEYS):
                raise ValueError(f"{where}: a setup difference has exactly the keys {', '.join(DIFFERENCE_KEYS)}: "
                                 f"{entry!r}")
            for key in DIFFERENCE_KEYS:
                fields = {f for _, f, _, _ in string.Formatter().parse(str(entry[key])) if f}
                if fields - set(DIFFERENCE_FIELDS):
                    raise ValueError(f"{where}: setup difference {entry['aspect']!r} uses unknown placeholder(s) "
                                     f"{sorted(fields - set(DIFFERENCE_FIELDS))} "
                                     f"(known: {', '.join(DIFFERENCE_FIELDS)})")
            out.append({k: str(entry[k]) for k in DIFFERENCE_KEYS})
    return tuple(out)


def resolve_differences(differences, setup, rows) -> list[dict]:
    """The setup differences with their placeholders filled from setup.json and per_seed.csv."""
    clean = [s["mean"] for s in summarize(rows) if s["attack"] == "clean"]
    seeds = sorted({r["seed"] for r in rows})
    aa = [r["n_examples"] for r in rows if str(r["attack"]).startswith("autoattack")]
    spread = len(clean) > 1 and min(clean) != max(clean)
    values = {"n_seeds": _seeds(len(seeds)), "epochs": setup["epochs"], "batch_size": setup["batch_size"],
              "n_test": f"{max(r['n_examples'] for r in rows if r['attack'] == 'clean'):,}",
              "n_autoattack": f"{max(aa):,}" if aa else "none",
              "data": setup["data"], "arms": ", ".join(a["label"] for a in setup["arms"]),
              "clean": (f"{100 * min(clean):.1f}–{100 * max(clean):.1f} %" if spread else f"{100 * clean[0]:.1f} %")
              if clean else "—"}
    return [{k: v.format_map(values) for k, v in d.items()} for d in differences]


def _claim_pairs(claim, setup, ref) -> list:
    arms = [a["label"] for a in setup["arms"]]
    if claim["pairs"] is not None:
        return [tuple(p) for p in claim["pairs"].get(setup["scale"], [])]
    chosen = [str(a) for a in claim["arms"]] if claim["arms"] is not None else [a for a in arms if a != ref]
    return [(a, ref) for a in chosen]


def _cell_effect(claim, arm, attack):
    effect = claim["effect"]
    if isinstance(effect, dict):
        return effect.get(arm if claim["effect_by"] == "arm" else attack)
    return effect


def evaluate_claim(claim: dict, setup: dict, protocol, rows, epochs, checks) -> dict:
    """A claim of an experiment file applied to its shipped files: its cells (every pair × attack
    × ε (× epoch) that ran), each Holm-corrected with its interval, MDE and seeds needed; the
    verdict; the warnings that qualify it; what it could not test."""
    from .statistics import seed_differences

    ref = str(claim["reference"] or setup["reference"])
    pairs = _claim_pairs(claim, setup, ref)
    cells, missing = [], []
    if claim["arms"] is None and claim["pairs"] is None:  # every arm: name those the file has and the data lack
        shipped = {a["label"] for a in setup["arms"]}
        missing += [f"{arm} − {ref} ({arm} is in the experiment file, not in these data)"
                    for arm in claim.get("file_arms", {}).get(setup["scale"], ()) if arm not in shipped and arm != ref]
    ratio = claim["measure"] == "train_seconds_ratio"
    if ratio:
        seconds = {(r["arm"], r["seed"]): r["train_seconds"] for r in rows if r["attack"] == "clean"}
        for arm, base in pairs:
            seeds = sorted(s for (a, s) in seconds if a == arm and (base, s) in seconds and seconds[(base, s)] > 0)
            if not seeds:
                missing.append(f"{arm} / {base}")
                continue
            diffs = [seconds[(arm, s)] / seconds[(base, s)] - 1 for s in seeds]
            detail = "; ".join(f"seed {s}: {seconds[(arm, s)]:.1f} / {seconds[(base, s)]:.1f} s = "
                               f"{seconds[(arm, s)] / seconds[(base, s)]:.3f}" for s in seeds)
            cells.append({"arm": arm, "reference": base, "attack": "", "eps": None, "epoch": None, "diffs": diffs,
                          "per_seed": detail, "paper": claim["effect"], "direction": 0})
    else:
        source = rows if claim["data"] == "per_seed" else epochs
        all_eps = sorted({r["eps"] for r in source if r["attack"] != "clean"})
        wanted = [parse_eps(e) for e in claim["eps"]] if claim["eps"] is not None else all_eps
        epoch_list = sorted({r["epoch"] for r in source}) if claim["data"] == "per_epoch" else [None]
        for arm, base in pairs:
            for attack in claim["attacks"]:
                for eps in wanted:
                    for epoch in epoch_list:
                        match = {"epoch": epoch} if epoch is not None else {}
                        e = 0.0 if attack == "clean" else next((x for x in all_eps if math.isclose(x, eps)), eps)
                        pairs_ = seed_differences(source, base, arm, attack, e, **match)
                        seeds, diffs = [s_ for s_, _ in pairs_], [d for _, d in pairs_]
                        if not diffs:
                            missing.append(f"{arm} − {base}, {attack}, ε = {eps_label(eps)}"
                                           + (f", epoch {epoch}" if epoch is not None else ""))
                            continue
                        paper = _cell_effect(claim, arm, attack)
                        direction = _DIRECTIONS[claim["direction"]] if claim["direction"] else (
                            "either" if paper is None else (paper > 0) - (paper < 0))
                        cells.append({"arm": arm, "reference": base, "attack": attack, "eps": e, "epoch": epoch,
                                      "diffs": diffs, "paper": None if paper is None else paper / 100,
                                      "per_seed": "; ".join(f"seed {s}: {100 * d:+.2f}" for s, d in zip(seeds, diffs)),
                                      "direction": direction})
    tested = correct_cells(cells, ALPHA)
    consistent = "arm" if claim["direction"] == "consistent" else None
    outcome = verdict(tested, claim["require"], consistent)
    k = len(tested)
    mdes = [c["mde"] for c in tested if not math.isnan(c["mde"])]
    needed = [c["seeds_needed"] for c in tested if c["seeds_needed"] is not None
              and (c["direction"] == "either" or c["direction"] == ((c["paper"] > 0) - (c["paper"] < 0)))]
    claim_needed = (max(needed) if claim["require"] == "all" else min(needed)) if needed else None
    return {"claim": claim, "cells": tested, "missing": missing, "k": k, "verdict": outcome["verdict"],
            "agreeing": outcome["agreeing"], "mde_min": min(mdes) if mdes else float("nan"),
            "mde_max": max(mdes) if mdes else float("nan"), "seeds_needed": claim_needed,
            "warnings": _claim_warnings(claim, setup, protocol, tested, checks, rows),
            "context": _claim_context(claim, setup, rows, tested, missing, protocol)}


def parse_eps(value) -> float:
    from odezoo.parsing import parse_number

    return float(parse_number(value))


def _claim_warnings(claim, setup, protocol, cells, checks, rows) -> list[str]:
    """What qualifies a claim's verdict: gradient-masking WARNs on the models in its cells,
    stand-in data, a weaker attack set, validation data."""
    out = []
    involved = {c["arm"] for c in cells} | {c["reference"] for c in cells}
    if claim["measure"] == "accuracy":
        seeds = {r["seed"] for r in rows}
        models = {(c["arm"], c["seed"]) for c in checks if c["arm"] in involved and c["seed"] in seeds}
        warned, source = defaultdict(list), {}
        for c in checks:
            if c["status"] == "warn" and c["arm"] in involved and c["seed"] in seeds:
                warned[c["check"]].append(f"{c['arm']} seed {c['seed']}")
                source[c["check"]] = c.get("source") or "checks.csv"
        for check, which in warned.items():
            where = ", ".join(which) if len(which) <= 3 else f"{len(which)} of {len(models)} models"
            out.append(f"masking check `{check}` WARNs on {where} ({source[check]})")
        if not any((c.get("source") or "checks.csv") == "checks.csv" for c in checks):
            out.append("no gradient-masking checks were run")
        if not _has_standard_autoattack(protocol):
            out.append(f"protocol `{protocol.full_name}` did not run standard AutoAttack, so targeted attacks are "
                       "untested on these models (APGD-T, FAB-T and Square: a weaker attack set than `strong-v1`)")
        if not any(a.gradient_free for a in protocol.attacks):
            out.append(f"protocol `{protocol.full_name}` has no stand-alone gradient-free attack"
                       + (" (only AutoAttack's last component, Square on the examples the gradient attacks left)"
                          if _has_standard_autoattack(protocol) else "")
                       + ": gradient masking could pass unseen")
        if claim["data"] == "per_epoch":
            out.append("per-epoch validation accuracy, not the test protocol (per_epoch.csv)")
    out += claim["warnings"]  # the experiment file's own, e.g. a reference arm picked after seeing the data
    if setup["stand_in"]:
        out.append(f"{STAND_IN_WARNING}, so the verdict assumes the paper's CIFAR-10 effect carries over to them "
                   "(MNIST digits padded to 32×32×3)")
    if setup.get("dry_run"):
        out.append("dry run: not a result")
    return out


#: the warning every claim on stand-in data carries (`verdict_label` reads it back from claims.csv)
STAND_IN_WARNING = "stand-in data, not CIFAR-10"


def _has_standard_autoattack(protocol) -> bool:
    return any(a.kind == "autoattack" and getattr(a, "version", "") == "standard" for a in protocol.attacks)


def _other_attacks_context(claim, rows, cells, protocol) -> list[str]:
    """The claim's arm pairs under the protocol's *other* attacks at its ε (and `worst`): their
    seed-paired differences, how many lie beyond their own uncorrected 95 % interval and what
    those could detect — so a verdict under the paper's weak attack is read beside the strong ones."""
    pairs = list(dict.fromkeys((c["arm"], c["reference"]) for c in cells))
    eps_list = sorted({c["eps"] for c in cells if c["eps"] is not None})
    skip = set(claim["attacks"] or ()) | {a.name for a in protocol.attacks if a.baseline} | {"clean"}
    others = [a.name for a in protocol.attacks if a.name not in skip] + ["worst"]
    parts = []
    for attack in others:
        means, mdes, beyond, n_cells = [], [], 0, 0
        for eps in eps_list:
            for arm, ref in pairs:
                d = paired(rows, ref, arm, attack, eps)
                if not d.get("n"):
                    continue
                n_cells += 1
                means.append(100 * d["mean"])
                beyond += bool(d.get("beyond"))
                if not math.isnan(d.get("mde", float("nan"))):
                    mdes.append(100 * d["mde"])
        if n_cells:
            parts.append(f"`{attack}` {_range(means)} ({beyond} of {n_cells} beyond"
                         + (f"; detectable {_range(mdes, '{:.2f}')}" if mdes else "") + ")")
    if not parts:
        return []
    return ["the same pairs under the protocol's other attacks, points (how many lie beyond their own uncorrected "
            "95 % interval; detectable effect at 80 % power): " + ", ".join(parts)]


def _claim_context(claim, setup, rows, cells, missing, protocol) -> list[str]:
    """Facts beside a claim's cells: what the strongest evaluation (``worst``) gives its arms,
    the cells it could not test, the experiment file's own context."""
    out = []
    if claim["measure"] == "accuracy" and claim["data"] == "per_seed":
        involved = {c["arm"] for c in cells} | {c["reference"] for c in cells}
        worst = []
        for eps in sorted({c["eps"] for c in cells}):
            means = [s["mean"] for s in summarize(rows) if s["attack"] == "worst" and s["eps"] == eps
                     and s["arm"] in involved]
            if means:
                worst.append(_range([100 * m for m in means], "{:.2f}", " %") + f" at ε = {eps_label(eps)}")
        if worst:
            out.append("`worst` (per example, correct under every attack) on these arms, mean over seeds: "
                       + ", ".join(worst))
        clean = [s["mean"] for s in summarize(rows) if s["attack"] == "clean" and s["arm"] in involved]
        if clean:  # a robust-accuracy difference can be in part a clean-accuracy one
            out.append("clean accuracy on these arms, mean over seeds: "
                       + _range([100 * m for m in clean], "{:.2f}", " %"))
        out += _other_attacks_context(claim, rows, cells, protocol)
    if claim["data"] == "per_epoch":
        flips = defaultdict(set)
        for c in cells:
            if c["mean"] != 0:
                flips[(c["arm"], c["reference"])].add(c["mean"] > 0)
        for (arm, ref), signs in flips.items():
            if len(signs) == 2:
                above = [c["epoch"] for c in cells if (c["arm"], c["reference"]) == (arm, ref) and c["mean"] > 0]
                below = [c["epoch"] for c in cells if (c["arm"], c["reference"]) == (arm, ref) and c["mean"] < 0]
                out.append(f"the mean of {arm} − {ref} changes sign over the epochs: above at epoch(s) "
                           f"{', '.join(map(str, above))}, below at {', '.join(map(str, below))}")
    if missing:
        out.append(f"not run, so not among the K cells: {'; '.join(missing)}")
    if claim.get("context"):
        out.append(str(claim["context"]))
    return out


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def _sig(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def claim_rows(name: str, result: dict) -> list[dict]:
    """claims.csv's rows of one evaluated claim (`CLAIM_COLUMNS`): one per cell, values in points
    (accuracy) or as a ratio (training time), numbers written at fixed precision."""
    claim, cells = result["claim"], result["cells"]
    ratio = claim["measure"] == "train_seconds_ratio"
    scale = 1 if ratio else 100
    shift = 1 if ratio else 0

    def value(x):  # a difference (fraction or ratio − 1) as written: points, or the ratio itself
        return None if x is None or math.isnan(x) else x * scale + shift

    k = result["k"]
    correction = ("none (K = 1)" if k == 1 else
                  f"Holm over K = {k}: each interval at the level Holm tested its cell") if k else ""
    base = {"experiment": name, "claim": claim["id"], "claim_text": claim["claim"], "paper_source": claim["source"],
            "measure": claim["measure"], "unit": "ratio" if ratio else "points", "require": claim["require"],
            "K": k, "correction": correction,
            "claim_mde_min": _num(result["mde_min"] * scale), "claim_mde_max": _num(result["mde_max"] * scale),
            "claim_seeds_needed": result["seeds_needed"] if result["seeds_needed"] is not None else "",
            "agreeing": result["agreeing"], "verdict": result["verdict"],
            "warnings": " | ".join(result["warnings"]), "context": " | ".join(result["context"])}
    out = []
    for c in cells:
        direction = c["direction"]
        if claim["direction"] == "consistent":
            direction = "consistent"
        elif direction != "either":
            direction = {1: "+", -1: "-", 0: "none"}[direction]
        label = (f"{c['arm']} / {c['reference']}" if ratio else
                 f"{c['arm']} − {c['reference']}, {c['attack']}, ε = {eps_label(c['eps'])}"
                 + (f", epoch {c['epoch']}" if c["epoch"] is not None else ""))
        out.append({**base, "cell": label, "arm": c["arm"], "reference": c["reference"], "attack": c["attack"],
                    "eps": "" if c["eps"] is None else eps_label(c["eps"]),
                    "epoch": "" if c["epoch"] is None else c["epoch"], "n": c["n"], "per_seed": c["per_seed"],
                    "paper_effect": _num(value(c["paper"]), 2 if not ratio else 3),
                    "direction": direction, "mean": _num(value(c["mean"])), "sd": _num(c["sd"] * scale),
                    "p": _sig(c.get("p")), "holm_step": c["step"], "holm_level": f"{c['level']:.6g}",
                    "p_holm": _sig(c["p_adjusted"]), "ci_low": _num(value(c["low"])),
                    "ci_high": _num(value(c["high"])),
                    "beyond_zero": {1: "above", -1: "below", 0: "no"}[c["beyond"]],
                    "excludes_paper": "" if c["excludes_paper"] is None else ("yes" if c["excludes_paper"] else "no"),
                    "mde": _num(c["mde"] * scale),
                    "seeds_needed": "" if c["seeds_needed"] is None else c["seeds_needed"]})
    if not cells:
        out.append({**base, **{k_: "" for k_ in CLAIM_COLUMNS if k_ not in base}})
    return out


def write_claims_csv(path: Path, rows: list[dict]) -> Path:
    """claims.csv with its header even when the experiment has no claims."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CLAIM_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in CLAIM_COLUMNS})
    return atomic_write(path, buffer.getvalue())


def read_claims(path: Path) -> dict:
    """claims.csv read back, grouped by claim id (in file order): what every claims table is built from."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, strict=True))
    except FileNotFoundError:
        raise ReportError(f"{path} is missing; run `{REPORT_COMMAND}` to write it") from None
    grouped = {}
    for r in rows:
        grouped.setdefault(r["claim"], []).append(r)
    return grouped


def _f(text: str) -> float:
    return float(text) if text not in ("", None) else float("nan")


def _range(values, fmt="{:+.2f}", unit="") -> str:
    """``low to high`` (``low–high`` for unsigned formats), or one value when they agree."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "—"
    low, high = fmt.format(round_shown(min(values))), fmt.format(round_shown(max(values)))
    if low == high:
        return low + unit
    return f"{low} to {high}{unit}" if "+" in fmt else f"{low}–{high}{unit}"


def _level(rows) -> str:
    k = int(rows[0]["K"])
    return f"{ALPHA:g}" if k == 1 else f"{ALPHA:g}/{k} = {ALPHA / k:.3g}"


def verdict_label(rows) -> str:
    """A claim's verdict as the tables print it, from its claims.csv rows: the rule's word, with
    the attacks of its cells when the verdict is a decision about accuracy (a verdict under the
    paper's weak attack says nothing about stronger ones) and "on the stand-in" when the data were."""
    first = rows[0]
    label = first["verdict"]
    if label in (REPRODUCED, NOT_REPRODUCED) and first["unit"] == "points":
        attacks = list(dict.fromkeys(r["attack"] for r in rows if r["attack"]))
        if attacks:
            label += " under " + ", ".join(f"`{a}`" for a in attacks)
    if label != NOT_RUN and any(w.startswith(STAND_IN_WARNING) for w in first["warnings"].split(" | ")):
        label += " on the stand-in"
    return label


def verdict_sentence(rows) -> str:
    """One claim's verdict and why, in words, from its claims.csv rows alone."""
    first = rows[0]
    if first["verdict"] == NOT_RUN:
        return f"**{NOT_RUN}**: none of the claim's cells ran."
    k, agreeing = int(first["K"]), int(first["agreeing"])
    if first["unit"] == "ratio":
        (c,) = rows
        found = (f"training-time ratio {float(c['mean']):.3f} (mean of the per-seed ratios over all {c['n']} seeds "
                 f"that ran), 95 % interval {float(c['ci_low']):.3f}–{float(c['ci_high']):.3f}, which "
                 + ("holds" if c["excludes_paper"] == "no" else "excludes") + f" the paper's "
                 f"{float(c['paper_effect']):g}; detectable difference {float(c['mde']):.3f} (80 % power); no "
                 "number of seeds can show a ratio of exactly 1, only narrow the interval around it")
        return f"**{verdict_label(rows)}**: {found}."
    papers = [_f(r["paper_effect"]) for r in rows]
    known = not all(math.isnan(p) for p in papers)
    if first["direction"] == "consistent":
        what = "beyond zero"
    elif first["direction"] == "either":
        what = "beyond zero (the paper states no direction)"
    else:
        what = "beyond zero in the paper's direction"
    needs = " (the claim needs all)" if first["require"] == "all" and first["direction"] != "consistent" else ""
    found = (f"{agreeing} of {k} corrected interval{'s' if k > 1 else ''} {what}{needs}, "
             + ("no correction (K = 1)" if k == 1 else f"Holm over K = {k}")
             + f"; differences {_range([_f(r['mean']) for r in rows])} points against "
             + (f"the paper's {_range(papers)}" if known else "no effect size in the paper")
             + f"; detectable effect {_range([_f(first['claim_mde_min']), _f(first['claim_mde_max'])], '{:.2f}')} "
             f"points (80 % power at α = {_level(rows)})")
    if first["claim_seeds_needed"]:
        found += (f"; 80 % power against the paper's effect from about {int(first['claim_seeds_needed']):,} seeds "
                  f"(now {rows[0]['n']})")
    elif first["verdict"] != REPRODUCED:
        found += ("; the seeds it would need cannot be said without the paper's effect size" if not known else
                  "; the seeds it would need cannot be said: no cell with a direction has a paper effect and a "
                  "spread")
    return f"**{verdict_label(rows)}**: {found}."


def _context(row) -> str:
    return "; ".join(row["context"].split(" | ")) if row["context"] else ""


def claims_section(grouped: dict) -> list[str]:
    """The summary's section on the paper's claims, from claims.csv alone."""
    if not grouped:
        return []
    lines = ["#### The paper's claims (verdict rule: docs/results.md; every number here is in `claims.csv`)", ""]
    for cid, rows in grouped.items():
        first = rows[0]
        lines += [f"**`{cid}`** — {first['claim_text']}. Paper: {first['paper_source']}.", ""]
        if first["cell"]:
            unit = "ratio" if first["unit"] == "ratio" else "points"
            lines += [f"| cell | paper ({unit}) | ours (n) | Holm step: level | corrected interval | beyond zero | "
                      "excludes paper | MDE | seeds needed |", "|---|---|---|---|---|---|---|---|---|"]
            digits = 3 if first["unit"] == "ratio" else 2
            for r in rows:
                def show(x, sign=first["unit"] != "ratio"):
                    return "—" if x == "" else f"{round_shown(float(x), digits):{'+' if sign else ''}.{digits}f}"
                interval = f"[{show(r['ci_low'])}, {show(r['ci_high'])}]" if r["ci_low"] else "— (no spread)"
                paper = show(r["paper_effect"]) if r["direction"] != "none" or first["unit"] == "ratio" \
                    else "0 (no direction)"
                lines.append(f"| {r['cell']} | {paper} | {show(r['mean'])} (n = {r['n']}) | "
                             f"{r['holm_step']}: {r['holm_level']} | {interval} | {r['beyond_zero']} | "
                             f"{r['excludes_paper'] or '—'} | {show(r['mde'], False)} | "
                             f"{r['seeds_needed'] or '—'} |")
            lines.append("")
        lines.append(verdict_sentence(rows))
        if first["warnings"]:
            lines.append("Warnings: " + "; ".join(first["warnings"].split(" | ")) + ".")
        if first["context"]:
            lines.append("Context: " + _context(first) + ".")
        lines.append("")
    return lines


def claims_table(claims: dict, readme: bool = False) -> list[str]:
    """The claims table of docs/results.md (``readme=False``) or README.md, from the claims.csv
    files alone (``claims``: experiment -> claims.csv rows grouped by claim)."""
    if readme:
        lines = ["| the paper's claim | where the paper's effect comes from | what the rule finds here | verdict |",
                 "|---|---|---|---|"]
    else:
        lines = ["| claim | the paper's effect | what the rule finds here (claims.csv) | warnings and context | "
                 "verdict |", "|---|---|---|---|---|"]
    for name, grouped in claims.items():
        for cid, rows in grouped.items():
            first = rows[0]
            found = verdict_sentence(rows).split(": ", 1)[1].rstrip(".")
            source = first["paper_source"]
            if readme:
                source = source.split(":")[0] if ":" in source else source
                short = "; ".join(w.split(" (")[0] for w in first["warnings"].split(" | ")) if first["warnings"] \
                    else ""
                lines.append(f"| `{cid}`: {first['claim_text']} | {source} | {found}"
                             + (f". Warnings: {short}" if short else "")
                             + (f". Context: {_context(first)}" if first["context"] else "")
                             + f" | **{verdict_label(rows)}** |")
            else:
                notes = "; ".join(x for x in (first["warnings"].replace(" | ", "; "), _context(first)) if x)
                lines.append(f"| `{cid}` ({name}): {first['claim_text']} | {source} | {found} | {notes or '—'} | "
                             f"**{verdict_label(rows)}** |")
    return lines


def differences_section(differences) -> list[str]:
    """The summary's table of how the run differs from the paper (setup.json's ``differences``)."""
    if not differences:
        return []
    lines = ["#### How this run differs from the paper (setup.json `differences`)", "",
             "| aspect | the paper | here | expected effect |", "|---|---|---|---|"]
    for d in differences:
        lines.append(f"| {d['aspect']} | {d['paper']} | {d['here']} | {d['effect']} |")
    return lines + [""]


START, END = "<!-- generated:start -->", "<!-- generated:end -->"
#: where the claims tables go in docs/results.md and README.md
CLAIMS_START, CLAIMS_END = "<!-- claims:start -->", "<!-- claims:end -->"


def rule_text() -> list[str]:
    """The verdict rule in words, with the numbers that say how far the usual MDE approximation is
    from the exact one (computed here, so the page states no number by hand)."""
    def gap(n, alpha):
        return f"{100 * (mde(1.0, n, alpha) / mde_approx(1.0, n, alpha) - 1):.1f} %"

    return [
        "**The verdict rule** (`odezoo.experiments.statistics`, applied by `odezoo report` to the claims listed "
        "in `recipes/experiments/<experiment>.yaml`; every number in the tables below is in "
        "`docs/results/<experiment>/claims.csv`, one row per cell).",
        "",
        "* **Cells.** A claim covers K cells — attack × ε × arm pair (× epoch for per-epoch curves) — named in "
        "its experiment file from the paper (the paper's attack, ε and arms), not chosen from our results (where a "
        "claim's reference arm had to be picked from them, its row warns so). Per "
        "cell: the seed-paired difference arm − reference over the seeds both ran, and a two-sided Student-t "
        "test with n − 1 degrees of freedom.",
        f"* **Correction: Holm** (step-down, Holm 1979) over the claim's K cells at α = {ALPHA:g}: sort the K "
        "p-values; the i-th smallest is compared with α/(K − i + 1), and Holm rejects until the first that is "
        "not smaller. Each cell's interval is the Student-t interval at the level Holm tested it (cells after "
        "the first non-rejected step share that step's level), so an interval lies beyond zero exactly when "
        "Holm rejects its cell; `p_holm` is Holm's adjusted p-value. These intervals invert Holm's tests; they "
        "are not simultaneous intervals (a rejected cell's is narrower than the Bonferroni interval at α/K). "
        "With K = 1 the interval is the plain 95 % t interval. A cell whose seeds all gave the same difference "
        "(every model at 0 %, say) has no interval: it can neither lie beyond zero nor exclude anything.",
        "* **Detectable effect and seeds needed** at 80 % power, for a two-sided paired t-test at α/K — Holm's "
        "first (Bonferroni) level, the one a cell must pass before Holm rejects anything — computed exactly "
        "from the noncentral t distribution (`scipy.stats.nct`) with the observed paired standard deviation. "
        "The usual approximation (t₁₋α/₂,ₙ₋₁ + t₀.₈,ₙ₋₁)·sd/√n is below the exact value by "
        f"{gap(3, ALPHA)} at 3 seeds and α = {ALPHA:g}, {gap(8, ALPHA)} at 8 seeds, and {gap(3, ALPHA / 6)} at "
        "3 seeds and α/6. Seeds needed: the fewest seeds at which a cell reaches 80 % power against the "
        "paper's effect for that cell (the smallest over the claim's cells; for a claim about every cell, the "
        "largest).",
        "* **Verdicts.** *reproduced* — at least one corrected interval lies beyond zero in the paper's "
        "direction (the row says in how many of K cells; a claim about every cell needs all K; for a claim "
        "that arms differ, with no direction stated, either side counts); *not "
        "reproduced* — every corrected interval excludes the paper's effect (so it needs the paper's effect in "
        "every cell); *not testable here* — otherwise, with the detectable effect beside the paper's effect and "
        "the seeds the paper's effect would need. A claim that an ordering holds throughout (stable over "
        "epochs) is reproduced when every interval lies beyond zero with each arm pair's intervals on one "
        "side, and not reproduced when two intervals of one arm pair lie beyond zero on opposite sides. A cost "
        "claim is one cell of per-seed training-time ratios over every seed that ran, against the paper's "
        "ratio 1 (no overhead): it can only be not reproduced (the interval excludes 1) or not testable.",
        "* **Warnings** (masking WARNs on the models of the claim's cells — `checks.csv`, and "
        "`attacks-not-above-clean` from `per_seed.csv` — stand-in data, a "
        "weaker attack set, validation rather than test data) and context (the per-example worst case over "
        "every attack on the claim's arms, cells that did not run) qualify a verdict; they do not change it. "
        "The verdict column names the attacks of a decided claim's cells (a verdict under the paper's weak "
        "attack says nothing about stronger ones) and says *on the stand-in* where the data were.",
        "",
    ]


def _replace_between(path: Path, text: str, start: str, end: str, body: str) -> str:
    if start not in text or end not in text:
        raise ReportError(f"{path} lacks the markers {start} / {end}")
    head, rest = text.split(start, 1)
    return head + start + "\n" + body + end + rest.split(end, 1)[1]


def write_report(results_root: Path, page: Path, experiments, paper=None, command: str = REPORT_COMMAND,
                 rerun: str = "odezoo reproduce {name} --scale small", claims=None, differences=None,
                 readme: Path | None = None, figures: bool = True) -> Path:
    """Rebuild every experiment of ``experiments`` found under ``results_root`` (per_seed.csv +
    protocol.json + setup.json) and put their summaries, in that order, into ``page`` between
    the generated markers; experiments without data are listed as not re-run, with ``rerun``.
    ``paper``, ``claims`` and ``differences`` map an experiment to what the paper reports, the
    claims it makes and how the run differs from it (see
    [`build_report`][odezoo.experiments.report.build_report]).  The claims tables — built from
    the claims.csv files alone — go between `CLAIMS_START` and `CLAIMS_END` in ``page`` (when it
    has them) and in ``readme`` (when given; it must have them)."""
    text = page.read_text() if page.exists() else f"{START}\n{END}\n"
    if START not in text or END not in text:
        raise ReportError(f"{page} lacks the markers {START} / {END}")
    parts, tables = [], {}
    for name in experiments:
        folder = results_root / name
        if not (folder / "per_seed.csv").exists():
            parts.append(f"### {name}\n\nNot yet re-run under the protocol: `{rerun.format(name=name)}`.\n")
            continue
        body = build_report(folder, (paper or {}).get(name), command, (claims or {}).get(name, ()),
                            (differences or {}).get(name, ()), figure=figures)
        tables[name] = read_claims(folder / "claims.csv")
        try:
            rel = folder.resolve().relative_to(page.parent.resolve())
        except ValueError:
            rel = folder.resolve()
        parts.append(body + f"\n![{name}]({rel.as_posix()}/{name}.png)\n")
    text = _replace_between(page, text, START, END, "\n".join(parts))
    if CLAIMS_START in text:
        text = _replace_between(page, text, CLAIMS_START, CLAIMS_END,
                                "\n".join(rule_text() + claims_table(tables)) + "\n")
    page.write_text(text)
    if readme is not None:
        body = "\n".join(claims_table(tables, readme=True)) + "\n"
        readme.write_text(_replace_between(readme, readme.read_text(), CLAIMS_START, CLAIMS_END, body))
    return page
