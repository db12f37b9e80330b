"""Stronger L∞ robustness evaluation than the paper's FGSM + PGD-7.

:func:`strong_robustness` runs, on the same examples and at one ``eps`` (pixel units,
inputs in [0, 1]):

* ``fgsm``  — advertorch FGSM (:func:`odezoo.robustness.fgsm`);
* ``pgd``   — the configured PGD (advertorch, first entry of ``pgd_steps``/``pgd_restarts``);
* ``pgd-<steps>x<restarts>`` — each further PGD configuration (more iterations, restarts);
* ``autoattack`` — a parameter-free ensemble built from torchattacks' components and run as
  a cascade, as in Croce & Hein (2020): each component attacks only the examples that are
  still correctly classified.  ``autoattack_version="standard"``: APGD-CE, APGD-T (targeted
  DLR, 9 target classes), FAB-T (9 target classes), Square (5,000 queries), 100 iterations
  each — the original AutoAttack "standard" Linf configuration.  ``"fast"``: APGD-CE then
  APGD-DLR (untargeted), 100 iterations each — the cheap CPU variant.  The exact list that
  ran is in ``result.descriptions["autoattack"]``;
* ``noise`` — uniform random noise in the eps ball (a sanity baseline, not an attack).

Every example keeps a boolean "still correct" per attack; ``result.worst`` is the
**per-example worst case**: correct on the clean input *and* under every attack.
Conventions of :mod:`odezoo.robustness` hold throughout: true labels, model in eval mode
with parameter gradients off (restored afterwards), accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .robustness import (EOTModel, RobustnessResult, _check_inputs, _correct, _positive, fgsm, import_advertorch, pgd,
                         results_table)

__all__ = ["AUTOATTACK_VERSIONS", "StrongRobustnessResult", "strong_robustness", "pgd_name", "auto_step_size",
           "to_robustness_result", "strong_results_table", "import_torchattacks"]

AUTOATTACK_VERSIONS = ("standard", "fast")


def import_torchattacks():
    """Import torchattacks (>= 3.5) with a helpful message when it is missing."""
    try:
        import torchattacks
    except ImportError as error:
        raise ImportError("AutoAttack needs torchattacks: pip install 'torchattacks>=3.5' "
                          f"(or pip install 'odezoo[recipes]'); import failed with: {error}") from error
    return torchattacks


def auto_step_size(eps: float, steps: int) -> float:
    """PGD step size ``2.5 · eps / steps`` (Madry et al. 2018): enough to cross the ball."""
    return 2.5 * float(eps) / max(int(steps), 1)


def pgd_name(index: int, steps: int, restarts: int) -> str:
    """Attack name of the ``index``-th PGD configuration: ``"pgd"`` for the first (the
    configured one), ``"pgd-<steps>x<restarts>"`` for the others."""
    return "pgd" if index == 0 else f"pgd-{int(steps)}x{int(restarts)}"


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


# --------------------------------------------------------------------------- attacks

def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else (value,)


def _pgd_configs(pgd_steps, pgd_restarts, step_size, eps: float) -> list[tuple[str, int, int, float]]:
    steps, restarts = _as_tuple(pgd_steps), _as_tuple(pgd_restarts)
    if len(restarts) == 1:
        restarts = restarts * len(steps)
    if len(steps) != len(restarts):
        raise ValueError(f"pgd_steps and pgd_restarts must have the same length, got {steps} and {restarts}")
    for s, r in zip(steps, restarts):
        if int(s) != s or s < 1 or int(r) != r or r < 1:
            raise ValueError(f"PGD steps and restarts must be integers >= 1, got steps={s}, restarts={r}")
    sizes = _as_tuple(step_size)
    if len(sizes) == 1:
        sizes = sizes * len(steps)
    if len(sizes) != len(steps):
        raise ValueError(f"step_size must be 'auto', one number or one per PGD configuration, got {step_size!r}")
    configs = []
    for i, (s, r, a) in enumerate(zip(steps, restarts, sizes)):
        a = auto_step_size(eps, s) if a == "auto" else _positive(a, "step_size")
        configs.append((pgd_name(i, s, r), int(s), int(r), a))
    names = [c[0] for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate PGD configurations {names}")
    return configs


def _uniform_noise(x: torch.Tensor, eps: float) -> torch.Tensor:
    return (x + eps * (2 * torch.rand_like(x) - 1)).clamp(0, 1)


def _autoattack_components(ta, model: nn.Module, eps: float, version: str, steps: int, square_queries: int,
                           n_classes: int, seed: int) -> list[tuple[str, str, Any]]:
    """(name, description, torchattacks attack) in cascade order."""
    targets = min(9, n_classes - 1)
    with contextlib.redirect_stdout(io.StringIO()):  # torchattacks prints for parameter-free models
        apgd_ce = ta.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed)
        if version == "fast":
            second = ta.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="dlr", seed=seed)
            components = [("apgd-ce", f"APGD-CE ({steps} steps)", apgd_ce),
                          ("apgd-dlr", f"APGD-DLR ({steps} steps, untargeted)", second)]
        else:
            apgd_t = ta.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, n_classes=n_classes, seed=seed)
            fab_t = ta.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
                           n_classes=n_classes, seed=seed)
            square = ta.Square(model, norm="Linf", eps=eps, n_queries=square_queries, n_restarts=1, seed=seed)
            components = [("apgd-ce", f"APGD-CE ({steps} steps)", apgd_ce),
                          ("apgd-t", f"APGD-T ({steps} steps, {targets} target classes)", apgd_t),
                          ("fab-t", f"FAB-T ({steps} steps, {targets} target classes)", fab_t),
                          ("square", f"Square ({square_queries} queries)", square)]
    for _, _, attack in components:
        if hasattr(attack, "n_target_classes"):
            attack.n_target_classes = targets
    return components


def _run_torchattack(attack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    attack.set_device(x.device)
    devices = list(range(torch.cuda.device_count())) if x.is_cuda else []
    # torchattacks reseeds the global RNG: keep the caller's stream untouched
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        return attack(x, y).detach()


def _describe(configs, fgsm_on: bool, noise_samples: int, aa_components, version: str) -> dict[str, str]:
    out = {}
    if fgsm_on:
        out["fgsm"] = "advertorch GradientSignAttack, CE on true labels"
    for name, s, r, a in configs:
        out[name] = f"advertorch LinfPGDAttack, {s} steps of {a:.4g}, {r} restart(s), random start"
    if aa_components is not None:
        out["autoattack"] = (f"AutoAttack {version} via torchattacks, cascade: "
                             + " -> ".join(desc for _, desc, _ in aa_components))
    if noise_samples:
        out["noise"] = f"uniform noise in the eps ball, worst of {noise_samples} draw(s)"
    return out


def strong_robustness(model: nn.Module, loader: Iterable, eps: float, device: str | torch.device = "cpu",
                      max_batches: int | None = None, pgd_steps: int | Sequence[int] = (7, 20),
                      pgd_restarts: int | Sequence[int] = (1, 5), step_size: float | str | Sequence = "auto",
                      fgsm_attack: bool = True, autoattack: bool = True, autoattack_version: str = "standard",
                      autoattack_steps: int = 100, square_queries: int = 5000, noise_samples: int = 1,
                      seed: int = 0, eot_samples: int = 1,
                      before_batch: Callable[[], Any] | None = None) -> StrongRobustnessResult:
    """Per-example correctness under FGSM, every PGD configuration, AutoAttack and noise at ``eps``.

    ``loader`` yields ``(x in [0, 1], true int64 labels)``; batches go to ``device`` (the
    model must already be there); ``max_batches`` stops early.  PGD configuration ``i`` is
    ``pgd_steps[i]`` iterations with ``pgd_restarts[i]`` random restarts (a single restart
    count applies to all); the first is named ``"pgd"``, the others ``"pgd-<steps>x<restarts>"``.
    ``step_size="auto"`` is ``2.5 · eps / steps`` per configuration; a number (or one per
    configuration) fixes it.  ``autoattack_version``: ``"standard"`` (APGD-CE, APGD-T, FAB-T,
    Square) or ``"fast"`` (APGD-CE, APGD-DLR); ``autoattack_steps`` iterations per component
    (100 as in the original; torchattacks' own ``AutoAttack`` uses 10), ``square_queries``
    for Square.  ``noise_samples`` uniform draws per example (0 disables; an example
    survives noise only if it survives every draw).  ``seed`` fixes every random start
    (the global RNG is left as it was).  Randomized models: as in
    :func:`odezoo.robustness.evaluate_robustness` (``before_batch``, ``eot_samples``).
    """
    eps = _positive(eps, "eps", allow_zero=True)
    if autoattack and autoattack_version not in AUTOATTACK_VERSIONS:
        raise ValueError(f"unknown autoattack_version {autoattack_version!r}; choose from {AUTOATTACK_VERSIONS}")
    if int(autoattack_steps) != autoattack_steps or autoattack_steps < 1 or int(square_queries) != square_queries \
            or square_queries < 1:
        raise ValueError(f"autoattack_steps and square_queries must be integers >= 1, got {autoattack_steps}, "
                         f"{square_queries}")
    if int(noise_samples) != noise_samples or noise_samples < 0:
        raise ValueError(f"noise_samples must be an integer >= 0, got {noise_samples!r}")
    configs = _pgd_configs(pgd_steps, pgd_restarts, step_size, eps)
    ta = import_torchattacks() if autoattack else None
    attacked = model if eot_samples == 1 and before_batch is None else EOTModel(model, eot_samples, before_batch)
    adv = import_advertorch()

    clean, labels = [], []
    correct: dict[str, list[torch.Tensor]] = {}
    stages: dict[str, list[torch.Tensor]] = {}
    seconds: dict[str, float] = {}
    aa_components = None
    devices = list(range(torch.cuda.device_count())) if torch.device(device).type == "cuda" else []

    def record(name: str, ok: torch.Tensor, start: float) -> None:
        correct.setdefault(name, []).append(ok.cpu())
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

    with adv.context.ctx_noparamgrad_and_eval(model):
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            _check_inputs(x, y, eps)
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                if before_batch is not None:
                    before_batch()
                logits = model(x)
            ok_clean = logits.argmax(-1) == y
            clean.append(ok_clean.cpu())
            labels.append(y.cpu())
            batch_seed = int(seed) + i

            if fgsm_attack:
                start = time.perf_counter()
                record("fgsm", _correct(model, fgsm(attacked, x, y, eps), y, before_batch), start)
            for name, s, r, a in configs:
                start = time.perf_counter()
                x_adv = pgd(attacked, x, y, eps, step_size=a, n_iter=s, restarts=r, seed=batch_seed)
                record(name, _correct(model, x_adv, y, before_batch), start)
            if ta is not None:
                start = time.perf_counter()
                aa_components = _autoattack_components(ta, attacked, eps, autoattack_version, int(autoattack_steps),
                                                       int(square_queries), logits.shape[-1], batch_seed)
                robust = ok_clean.clone()
                for stage, _, attack in aa_components:
                    index = robust.nonzero().flatten()
                    if index.numel():
                        x_adv = _run_torchattack(attack, x[index], y[index])
                        robust[index] = _correct(model, x_adv, y[index], before_batch)
                    stages.setdefault(stage, []).append(robust.cpu().clone())
                record("autoattack", robust, start)
            if noise_samples:
                start = time.perf_counter()
                ok = torch.ones_like(ok_clean)
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(batch_seed)
                    for _ in range(int(noise_samples)):
                        ok &= _correct(model, _uniform_noise(x, eps), y, before_batch)
                record("noise", ok, start)
    if not clean:
        raise ValueError("the loader yielded no examples (empty dataset or max_batches=0)")
    return StrongRobustnessResult(
        eps=eps, clean=torch.cat(clean), labels=torch.cat(labels),
        correct={k: torch.cat(v) for k, v in correct.items()},
        descriptions=_describe(configs, fgsm_attack, int(noise_samples), aa_components, autoattack_version),
        stages={k: torch.cat(v) for k, v in stages.items()}, seconds=seconds)


# --------------------------------------------------------------------------- tables

def to_robustness_result(results: StrongRobustnessResult | Sequence[StrongRobustnessResult]) -> RobustnessResult:
    """Fold results at several eps (same examples) into a :class:`RobustnessResult`
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
    """Rows ``{"solver", "attack", "eps", "accuracy"}`` as :func:`odezoo.robustness.results_table`
    writes them: attack ``"clean"`` at eps 0, one row per attack and eps, and attack
    ``"worst"`` (the per-example worst case over the clean input and all attacks).

    ``results``: one result, results at several eps, or a mapping label -> either."""
    if not isinstance(results, Mapping):
        results = {label: results}
    return results_table({name: to_robustness_result(r) for name, r in results.items()}, include_worst_case=True)
