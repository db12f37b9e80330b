"""Robustness evaluation: accuracy under attack, the stronger per-example evaluation, result tables.

[`evaluate_robustness`][odezoo.experiments.evaluation.evaluate_robustness] measures clean accuracy and accuracy
under FGSM and PGD at
several eps (the paper's evaluation); [`robustness_rows`][odezoo.experiments.evaluation.robustness_rows] turns it
into table rows.
[`strong_robustness`][odezoo.experiments.evaluation.strong_robustness] runs any attacks of the registry
([`odezoo.experiments.attack_registry`][odezoo.experiments.attack_registry]: FGSM, PGD budgets, AutoAttack's
cascade, Square, a noise baseline) on the same examples at one ``eps`` (pixel units, inputs in [0, 1]), each
under its registry name.

Every example keeps a boolean "still correct" per attack; ``result.worst`` is the
**per-example worst case**: correct on the clean input *and* under every attack.
Conventions of [`odezoo.experiments.attacks`][odezoo.experiments.attacks] hold throughout: true labels, model in
eval mode
with parameter gradients off (restored afterwards), accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .attack_registry import Attack, Batch
from .attacks import (ATTACKS, EOTModel, check_attack_inputs, correct_predictions, fgsm, import_advertorch, pgd,
                      pgd_step_size, positive_number)

__all__ = ["RobustnessResult", "evaluate_robustness", "results_table", "robustness_rows",
           "StrongRobustnessResult", "strong_robustness", "STRONG_DEFAULT", "as_attacks", "to_robustness_result",
           "strong_results_table"]

# --------------------------------------------------------------------------- the paper's evaluation


@dataclass
class RobustnessResult:
    """Accuracies (fractions in [0, 1]) over ``n_examples`` test examples.

    ``accuracy[(attack, eps)]``; ``worst_case[eps]``: examples correct under every attack at
    that eps (per-example worst case; only with two or more attacks)."""
    clean_accuracy: float
    accuracy: dict[tuple[str, float], float]
    n_examples: int
    worst_case: dict[float, float] = field(default_factory=dict)
    eot_samples: int = 1

    def robust_accuracy_of(self, attack: str, eps: float) -> float:
        for (name, value), acc in self.accuracy.items():
            if name == attack and math.isclose(value, float(eps), rel_tol=1e-9, abs_tol=1e-12):
                return acc
        raise KeyError(f"no result for attack {attack!r} at eps {eps}; evaluated: {sorted(self.accuracy)}")

    def to_dict(self) -> dict:
        return {"clean_accuracy": self.clean_accuracy, "n_examples": self.n_examples, "eot_samples": self.eot_samples,
                "accuracy": [{"attack": a, "eps": e, "accuracy": v} for (a, e), v in self.accuracy.items()],
                "worst_case": [{"eps": e, "accuracy": v} for e, v in self.worst_case.items()]}


def evaluate_robustness(model: nn.Module, loader: Iterable, attacks: Sequence[str] = ATTACKS,
                        eps_list: Sequence[float] = (0.1, 0.2, 0.3), pgd_kwargs: Mapping[str, Any] | None = None,
                        device: str | torch.device = "cpu", max_batches: int | None = None, eot_samples: int = 1,
                        before_batch: Callable[[], Any] | None = None) -> RobustnessResult:
    """Clean accuracy and accuracy under each attack in ``attacks`` at each ``eps`` (pixels).

    ``loader`` yields ``(x in [0, 1], true labels)``; batches are moved to ``device`` (the
    model must already be there).  ``pgd_kwargs`` go to `pgd` (``step_size``,
    ``n_iter``, ``restarts``, ``rand_init``, ``seed``); with a ``seed``, batch ``i`` uses
    ``seed + i``, so the random starts differ between batches and the whole evaluation is
    reproducible.  ``max_batches`` stops early.

    Randomized models: ``before_batch()`` (e.g. ``meta.resample``) is called before every
    prediction and, through `EOTModel`, before every forward pass of an attack.  With
    ``eot_samples > 1`` each attack forward averages the logits of that many passes, so
    the attack follows the expected gradient (EOT); predictions stay single passes, as the
    randomized model would answer when deployed."""
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; choose from {ATTACKS}")
    eps_values = [positive_number(e, "eps", allow_zero=True) for e in eps_list]
    pgd_kwargs = dict(pgd_kwargs or {})
    attacked = model if eot_samples == 1 and before_batch is None else EOTModel(model, eot_samples, before_batch)
    adv = import_advertorch()
    clean = 0
    hits = {(a, e): 0 for a in attacks for e in eps_values}
    worst = {e: 0 for e in eps_values}
    total = 0
    with adv.context.ctx_noparamgrad_and_eval(model):
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device), y.to(device)
            batch_pgd = pgd_kwargs if pgd_kwargs.get("seed") is None else {**pgd_kwargs, "seed": pgd_kwargs["seed"] + i}
            clean += int(correct_predictions(model, x, y, before_batch).sum())
            for e in eps_values:
                all_ok = torch.ones_like(y, dtype=torch.bool)
                for a in attacks:
                    x_adv = fgsm(attacked, x, y, e) if a == "fgsm" else pgd(attacked, x, y, e, **batch_pgd)
                    ok = correct_predictions(model, x_adv, y, before_batch)
                    hits[(a, e)] += int(ok.sum())
                    all_ok &= ok
                worst[e] += int(all_ok.sum())
            total += len(y)
    if total == 0:
        raise ValueError("the loader yielded no examples (empty dataset or max_batches=0)")
    return RobustnessResult(clean_accuracy=clean / total, accuracy={k: v / total for k, v in hits.items()},
                            n_examples=total, eot_samples=int(eot_samples),
                            worst_case={e: v / total for e, v in worst.items()} if len(attacks) > 1 else {})


# --------------------------------------------------------------------------- tables

def results_table(results: RobustnessResult | Mapping[str, RobustnessResult], label: str = "model",
                  include_worst_case: bool = False) -> list[dict[str, Any]]:
    """Rows ``{"solver", "attack", "eps", "accuracy"}``; clean accuracy is attack "clean" at eps 0.

    ``results`` is one result (labelled ``label``) or a mapping label -> result.  With
    ``include_worst_case`` the per-example worst case over attacks is added as attack "worst"."""
    if isinstance(results, RobustnessResult):
        results = {label: results}
    rows = []
    for name, result in results.items():
        rows.append({"solver": name, "attack": "clean", "eps": 0.0, "accuracy": result.clean_accuracy})
        rows += [{"solver": name, "attack": a, "eps": e, "accuracy": v} for (a, e), v in result.accuracy.items()]
        if include_worst_case:
            rows += [{"solver": name, "attack": "worst", "eps": e, "accuracy": v} for e, v in result.worst_case.items()]
    return rows



def robustness_rows(model: nn.Module, loader: Iterable, label: str, attacks: Sequence[str], eps_list: Sequence[float],
                    pgd_steps: int = 7, pgd_step_size: float | str = "auto", restarts: int = 1,
                    device: str | torch.device = "cpu", max_batches: int | None = None, eot_samples: int = 1,
                    before_batch: Callable[[], Any] | None = None, worst_case: bool = False,
                    pgd_seed: int | None = 0) -> list[dict[str, Any]]:
    """Rows {solver, attack, eps, accuracy} (clean as attack "clean", eps 0) for one model/solver.

    Each eps gets its own PGD step size when ``pgd_step_size`` is "auto"; otherwise one run
    covers every eps.  ``pgd_seed`` fixes PGD's random starts (None: fresh ones each run), so
    evaluating the same model twice gives the same numbers."""
    kwargs = dict(device=device, max_batches=max_batches, eot_samples=eot_samples, before_batch=before_batch)
    auto = pgd_step_size in ("auto", None)
    groups = [[e] for e in eps_list] if auto and "pgd" in attacks else [list(eps_list)]
    rows, clean_done = [], False
    for group in groups or [[]]:
        pgd_kwargs = {"n_iter": pgd_steps, "restarts": restarts, "seed": pgd_seed,
                      "step_size": _step_size(group[0] if group else 0.0, pgd_steps, pgd_step_size)}
        result = evaluate_robustness(model, loader, attacks=tuple(attacks), eps_list=tuple(group),
                                     pgd_kwargs=pgd_kwargs, **kwargs)
        for row in results_table(result, label=label, include_worst_case=worst_case):
            if row["attack"] == "clean":
                if clean_done:
                    continue
                clean_done = True
            rows.append({**row, "eps": float(row["eps"]), "accuracy": float(row["accuracy"])})
    return rows


def _step_size(eps: float, steps: int, step_size) -> float:
    return 2 / 255 if eps == 0 and step_size in ("auto", None) else pgd_step_size(eps, steps, step_size)


# --------------------------------------------------------------------------- the stronger evaluation

#: what `strong_robustness` runs by default: the paper's FGSM, two PGD budgets (the second with
#: restarts), standard AutoAttack, Square (gradient-free) and a noise baseline
STRONG_DEFAULT = ("fgsm", "pgd-7x2.5eps/7", "pgd-20x2.5eps/20-5r", "autoattack-standard", "square-5000q",
                  "noise-uniform")


@dataclass
class StrongRobustnessResult:
    """Per-example correctness (bool tensors of shape ``(n_examples,)``, loader order) at one ``eps``.

    ``correct[attack]``: still correctly classified under that attack (attacks in run order);
    ``stages``: AutoAttack's cumulative correctness after each component (``"apgd-ce"``, ...);
    ``descriptions[attack]``: exactly what ran; ``seconds[attack]``: wall time spent."""
    eps: float
    clean: torch.Tensor
    correct: dict[str, torch.Tensor]
    labels: torch.Tensor
    descriptions: dict[str, str] = field(default_factory=dict)
    stages: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_examples(self) -> int:
        return int(self.clean.numel())

    @property
    def attacks(self) -> tuple[str, ...]:
        return tuple(self.correct)

    @property
    def worst(self) -> torch.Tensor:
        """Per example: correct on the clean input and under every attack."""
        out = self.clean.clone()
        for ok in self.correct.values():
            out &= ok
        return out

    @property
    def clean_accuracy(self) -> float:
        return _mean(self.clean)

    @property
    def worst_accuracy(self) -> float:
        return _mean(self.worst)

    @property
    def accuracy(self) -> dict[str, float]:
        """Accuracy per attack, plus ``"worst"`` (the per-example worst case)."""
        return {**{a: _mean(ok) for a, ok in self.correct.items()}, "worst": self.worst_accuracy}

    def to_dict(self) -> dict:
        return {"eps": self.eps, "n_examples": self.n_examples, "clean_accuracy": self.clean_accuracy,
                "accuracy": self.accuracy, "descriptions": dict(self.descriptions),
                "autoattack_stages": {k: _mean(v) for k, v in self.stages.items()}, "seconds": dict(self.seconds)}


def _mean(mask: torch.Tensor) -> float:
    return int(mask.sum()) / mask.numel() if mask.numel() else float("nan")


def as_attacks(attacks: Sequence[Attack | str]) -> list[Attack]:
    """`Attack` objects from attacks or their names (`Attack.from_name`); a name listed twice is an error."""
    if isinstance(attacks, (str, Attack)):
        attacks = [attacks]
    out = [a if isinstance(a, Attack) else Attack.from_name(a) for a in attacks]
    names = [a.name for a in out]
    if len(set(names)) != len(names):
        raise ValueError(f"an attack is listed twice: {names}")
    if not out:
        raise ValueError("no attacks to run")
    return out


def strong_robustness(model: nn.Module, loader: Iterable, eps: float, attacks: Sequence[Attack | str] = STRONG_DEFAULT,
                      device: str | torch.device = "cpu", max_batches: int | None = None, seed: int = 0,
                      before_batch: Callable[[], Any] | None = None,
                      batch_ids: Sequence[int] | None = None) -> StrongRobustnessResult:
    """Per-example correctness under each of ``attacks`` at ``eps``, on the same examples.

    ``attacks``: `Attack` objects or their names from the registry
    ([`odezoo.experiments.attack_registry`][odezoo.experiments.attack_registry]: ``fgsm``,
    ``pgd-20x2.5eps/20-5r``, ``autoattack-standard``, ``square-1000q``, ``noise-uniform-8draws``, ...);
    the result is keyed by those names.  ``loader`` yields ``(x in [0, 1], true int64 labels)``;
    batches go to ``device`` (the model must already be there); ``max_batches`` stops early.
    ``seed`` fixes every random choice (the global RNG is left as it was): batch ``i`` of
    ``loader`` uses ``seed + batch_ids[i]`` (default ``seed + i``), so a shard of the batches
    given with their positions in the whole evaluation gets exactly the results it would have
    there.  Randomized models: ``before_batch()`` (e.g. ``meta.resample``) runs before every
    prediction and, through `EOTModel`, before every forward pass of an attack, which averages
    its own ``eot_samples`` passes.
    """
    eps = positive_number(eps, "eps", allow_zero=True)
    attacks = as_attacks(attacks)
    attacked = {a.name: model if a.eot_samples == 1 and before_batch is None
                else EOTModel(model, a.eot_samples, before_batch) for a in attacks}
    adv = import_advertorch()

    clean, labels = [], []
    correct: dict[str, list[torch.Tensor]] = {}
    stages: dict[str, list[torch.Tensor]] = {}
    seconds: dict[str, float] = {}

    with adv.context.ctx_noparamgrad_and_eval(model):
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            check_attack_inputs(x, y, eps)
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                if before_batch is not None:
                    before_batch()
                logits = model(x)
            ok_clean = logits.argmax(-1) == y
            clean.append(ok_clean.cpu())
            labels.append(y.cpu())
            batch_seed = int(seed) + (i if batch_ids is None else int(batch_ids[i]))
            for attack in attacks:
                start = time.perf_counter()
                ok, batch_stages = attack.run(Batch(model=model, attacked=attacked[attack.name], x=x, y=y, eps=eps,
                                                    clean=ok_clean, seed=batch_seed, n_classes=logits.shape[-1],
                                                    before_batch=before_batch))
                correct.setdefault(attack.name, []).append(ok.cpu())
                for stage, mask in batch_stages.items():
                    stages.setdefault(stage, []).append(mask.cpu())
                seconds[attack.name] = seconds.get(attack.name, 0.0) + time.perf_counter() - start
    if not clean:
        raise ValueError("the loader yielded no examples (empty dataset or max_batches=0)")
    return StrongRobustnessResult(
        eps=eps, clean=torch.cat(clean), labels=torch.cat(labels),
        correct={k: torch.cat(v) for k, v in correct.items()},
        descriptions={a.name: a.describe() for a in attacks},
        stages={k: torch.cat(v) for k, v in stages.items()}, seconds=seconds)


# --------------------------------------------------------------------------- tables

def to_robustness_result(results: StrongRobustnessResult | Sequence[StrongRobustnessResult]) -> RobustnessResult:
    """Fold results at several eps (same examples) into a
    [`RobustnessResult`][odezoo.experiments.evaluation.RobustnessResult]
    (``accuracy[(attack, eps)]``, ``worst_case[eps]``; clean accuracy from the first)."""
    if isinstance(results, StrongRobustnessResult):
        results = [results]
    results = list(results)
    if not results:
        raise ValueError("no results to tabulate")
    accuracy = {(a, r.eps): v for r in results for a, v in r.accuracy.items() if a != "worst"}
    return RobustnessResult(clean_accuracy=results[0].clean_accuracy, accuracy=accuracy,
                            n_examples=results[0].n_examples, worst_case={r.eps: r.worst_accuracy for r in results})


def strong_results_table(results: StrongRobustnessResult | Sequence[StrongRobustnessResult]
                         | Mapping[str, StrongRobustnessResult | Sequence[StrongRobustnessResult]],
                         label: str = "model") -> list[dict[str, Any]]:
    """Rows ``{"solver", "attack", "eps", "accuracy"}`` as
    [`results_table`][odezoo.experiments.evaluation.results_table]
    writes them: attack ``"clean"`` at eps 0, one row per attack and eps, and attack
    ``"worst"`` (the per-example worst case over the clean input and all attacks).

    ``results``: one result, results at several eps, or a mapping label -> either."""
    if not isinstance(results, Mapping):
        results = {label: results}
    return results_table({name: to_robustness_result(r) for name, r in results.items()}, include_worst_case=True)
