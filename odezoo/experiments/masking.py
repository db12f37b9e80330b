"""Automated gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019).

A robustness number measured with gradient attacks is only trustworthy if the gradients
are informative.  [`gradient_masking_checks`][odezoo.experiments.masking.gradient_masking_checks] runs the checks
that can be automated
and returns one [`Check`][odezoo.experiments.masking.Check] per criterion; ``print(format_checks(checks))`` gives
lines
``PASS  name: detail`` / ``WARN  name: detail``.  A WARN is a reason to distrust the
white-box numbers (try AutoAttack, EOT, BPDA, a black-box attack), not a proof of masking;
a model that passes every check can still be masked.

Checks (names as printed; what each can and cannot detect is in docs/recipes.md):

* ``deterministic-forward``: two forward passes, each preceded by ``before_forward()`` (pass
  a randomized MetaSolver's ``resample`` to test the model *as deployed*; under
  ``meta.evaluating()`` the pass is deterministic by construction), give identical logits —
  or, when they differ, the attacks average ``eot_samples`` > 1 passes (EOT).  A randomized
  model attacked without EOT warns;
* ``input-gradients``: ∇x CE is finite and, per example, its largest entry exceeds
  ``grad_threshold`` (1e-20: the softmax has saturated to within float32 underflow, and a
  sign step rests on rounding) for all but ``zero_grad_tolerance`` (5%) of the examples.  Per
  example, because a mean over examples hides a saturated majority behind a few
  misclassified examples (logits × 10, as after defensive distillation, pass a test on the
  mean or on exact zeros and fail this one);
* ``iterative-beats-single-step``: per example, at most ``single_step_tolerance`` of the
  examples are fooled by FGSM but not by PGD (``pgd_steps`` steps of 2.5·eps/steps);
* ``more-iterations-and-restarts``: PGD with twice the steps and ``restarts`` random restarts
  lowers accuracy by at most ``restart_tolerance``;
* ``noise-weaker-than-attacks``: accuracy under uniform noise in the eps ball (worst of
  ``noise_samples`` = 8 draws per example) is at least the accuracy under every gradient
  attack (within ``noise_tolerance``);
* ``monotonic-in-eps``: neither FGSM nor PGD accuracy rises with eps by more than
  ``monotonic_tolerance`` (a rising FGSM curve is a classic sign of masking or catastrophic
  overfitting of single-step adversarial training);
* ``reaches-chance``: PGD accuracy at ``large_eps`` is at most ``chance_factor`` × chance
  (chance = 1 / classes).  ``large_eps`` defaults to twice the largest eps of ``eps_list``
  (at most 0.5): at 0.5 every [0, 1] image can be made grey, so a check there only catches
  a gradient that is entirely broken.

One more check reads a protocol's own results, since every named protocol carries a
gradient-free attack: [`gradient_free_check`][odezoo.experiments.masking.gradient_free_check]
(``gradient-free-weaker``) warns when Square fools examples that every gradient-based attack of
the protocol left correct.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .attacks import import_advertorch, positive_number
from .attack_registry import Attack
from .evaluation import StrongRobustnessResult, strong_robustness

__all__ = ["attacks_above_clean_check", "gradient_free_check", "CHECKS", "Check", "format_checks",
           "gradient_masking_checks", "monotonic_check"]

CHECKS = ("deterministic-forward", "input-gradients", "iterative-beats-single-step", "more-iterations-and-restarts",
          "noise-weaker-than-attacks", "monotonic-in-eps", "reaches-chance")
_ATTACK_CHECKS = CHECKS[2:]


@dataclass(frozen=True)
class Check:
    """One check: ``status`` is ``"pass"`` or ``"warn"``; ``values`` holds the numbers behind ``detail``."""
    name: str
    status: str
    detail: str
    values: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.status not in ("pass", "warn"):
            raise ValueError(f"status must be 'pass' or 'warn', got {self.status!r}")

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def line(self) -> str:
        return f"{self.status.upper()}  {self.name}: {self.detail}"

    __str__ = line


def format_checks(checks: Iterable[Check]) -> str:
    """One ``PASS  name: detail`` / ``WARN  name: detail`` line per check."""
    return "\n".join(check.line() for check in checks)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _status(ok: bool) -> str:
    return "pass" if ok else "warn"


# --------------------------------------------------------------------------- from a protocol's results

def gradient_free_check(correct: Mapping[tuple[str, float], torch.Tensor], attacks: Sequence[Attack],
                        tolerance: float = 0.02) -> Check:
    """``gradient-free-weaker``: on the examples a gradient-free attack (Square) ran on, the
    fraction it fooled that *every* gradient-based attack of the same ε left correct (attacks with
    a gradient-free component of their own, standard AutoAttack, are left out of that set).  On a model
    whose gradients are informative that fraction is about zero (gradient attacks are stronger);
    above ``tolerance`` the gradient attacks are being misled — gradient masking — and the
    gradient-based numbers overstate robustness.  ``correct[(attack, eps)]``: per-example masks
    as in [`ProtocolResult`][odezoo.experiments.protocol.ProtocolResult]."""
    free = [a.name for a in attacks if a.gradient_free]
    guided = [a.name for a in attacks if a.only_gradients]  # not standard AutoAttack: it ends with Square
    if not free or not guided:
        return Check("gradient-free-weaker", "warn", "not run: the protocol needs a gradient-free attack (Square) and "
                     "a gradient-based one")
    fractions, parts = {}, []
    for (name, eps), ok in correct.items():
        if name not in free:
            continue
        n = ok.numel()
        survived_gradients = torch.ones(n, dtype=torch.bool)
        for other in guided:
            survived_gradients &= correct[(other, eps)][:n]
        only_free = int((~ok & survived_gradients).sum())
        fractions[(name, eps)] = only_free / n if n else 0.0
        parts.append(f"{name} at eps {eps:g}: {only_free} of {n} ({_pct(fractions[(name, eps)])})")
    worst = max(fractions.values(), default=0.0)
    return Check("gradient-free-weaker", _status(worst <= tolerance),
                 "examples fooled by the gradient-free attack but by no gradient-based one: " + "; ".join(parts)
                 + f" (warn above {_pct(tolerance)}: gradient masking)", {"fractions": fractions})


def attacks_above_clean_check(clean: tuple[float, int], attacked: Mapping[tuple[str, float], tuple[float, int]],
                              tolerance: float = 0.005) -> Check:
    """``attacks-not-above-clean``: no attack may leave a model *more* accurate than it is on the
    clean images.  An attack that raises accuracy is helping the model on some images — *label
    leaking* (Kurakin et al., 2017), a known symptom of gradient masking in models trained on
    single-step (FGSM) adversarial examples — and its number overstates robustness.  Computed
    from accuracies alone (so from any ``per_seed.csv``): ``clean`` and each ``attacked[(attack,
    eps)]`` are (accuracy, number of images); only attacks run on as many images as the clean
    number (the same first images) are compared.  Warns above ``tolerance`` (a fraction)."""
    clean_acc, n = clean
    same = {key: acc for key, (acc, m) in attacked.items() if m == n}
    over = {key: acc - clean_acc for key, acc in same.items() if acc - clean_acc > tolerance}
    if not same:
        return Check("attacks-not-above-clean", "pass", f"no attack ran on the {n} clean images to compare with")
    if not over:
        top = max(same, key=same.get)
        return Check("attacks-not-above-clean", "pass",
                     f"every attack at or below clean {_pct(clean_acc)} on the same {n} images (highest: {top[0]} at "
                     f"eps {top[1]:g}, {_pct(same[top])}; warn above clean + {_pct(tolerance)})", {"over": {}})
    parts = [f"{name} at eps {eps:g}: {_pct(clean_acc + d)}" for (name, eps), d in sorted(over.items())]
    return Check("attacks-not-above-clean", "warn",
                 f"above clean {_pct(clean_acc)} on the same {n} images: " + "; ".join(parts)
                 + " — the attack helps the model (label leaking: gradient masking)", {"over": over})


# --------------------------------------------------------------------------- model-only checks

def _determinism(model: nn.Module, batches, before_forward=None, eot_samples: int = 1) -> Check:
    diff, finite = 0.0, True

    def forward(x):
        if before_forward is not None:
            before_forward()
        return model(x)

    with torch.no_grad():
        for x, _ in batches:
            a, b = forward(x), forward(x)
            finite &= bool(torch.isfinite(a).all() and torch.isfinite(b).all())
            if not torch.equal(a, b):
                diff = max(diff, float((a - b).abs().nan_to_num(float("inf")).max()))
    values = {"max_abs_diff": diff, "eot_samples": int(eot_samples)}
    if not finite:
        return Check("deterministic-forward", "warn", "the logits contain NaN or inf", values)
    if diff > 0 and eot_samples > 1:
        return Check("deterministic-forward", "pass",
                     f"two forward passes differ (max |Δlogit| = {diff:.3g}): a randomized model, attacked with "
                     f"EOT over {eot_samples} passes per gradient", values)
    if diff > 0:
        return Check("deterministic-forward", "warn",
                     f"two forward passes differ (max |Δlogit| = {diff:.3g}): the model is randomized and the "
                     f"attacks use one pass per gradient; attack it with EOT (eot_samples) and report the "
                     f"randomness", values)
    return Check("deterministic-forward", "pass", "two forward passes give identical logits", values)


def _gradients(model: nn.Module, batches, threshold: float, zero_tolerance: float) -> tuple[Check, bool]:
    """The check, and whether any gradient reaches the input at all."""
    total_abs, count, zero, vanishing, n, finite = 0.0, 0, 0, 0, 0, True
    for x, y in batches:
        x = x.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
            if not loss.requires_grad:
                return Check("input-gradients", "warn", "no gradient reaches the input (detached input, "
                             "torch.no_grad or integer ops in forward): gradient attacks cannot run",
                             {"mean_abs": 0.0, "zero_fraction": 1.0, "vanishing_fraction": 1.0}), False
            grad = torch.autograd.grad(loss, x, allow_unused=True)[0]
        if grad is None:
            return Check("input-gradients", "warn", "the loss does not depend differentiably on the input: "
                         "gradient attacks cannot run",
                         {"mean_abs": 0.0, "zero_fraction": 1.0, "vanishing_fraction": 1.0}), False
        finite &= bool(torch.isfinite(grad).all())
        flat = grad.flatten(1).nan_to_num(0.0)
        total_abs += float(flat.abs().sum())
        count += flat.numel()
        zero += int((flat == 0).all(dim=1).sum())
        vanishing += int((flat.abs().amax(dim=1) <= threshold).sum())
        n += len(y)
    mean_abs, zero_fraction, vanishing_fraction = total_abs / max(count, 1), zero / max(n, 1), vanishing / max(n, 1)
    values = {"mean_abs": mean_abs, "zero_fraction": zero_fraction, "vanishing_fraction": vanishing_fraction,
              "finite": finite}
    detail = (f"max |∂CE/∂x| ≤ {threshold:.3g} for {_pct(vanishing_fraction)} of examples (exactly zero for "
              f"{_pct(zero_fraction)}; warn above {_pct(zero_tolerance)}); mean |∇x CE| = {mean_abs:.3g}")
    if not finite:
        return Check("input-gradients", "warn", "NaN or inf in the input gradient; " + detail, values), True
    return Check("input-gradients", _status(vanishing_fraction <= zero_tolerance), detail, values), True


# --------------------------------------------------------------------------- attack-based checks

def _iterative(results: Sequence[StrongRobustnessResult], fgsm: str, pgd: str, show: Mapping[str, str],
               tol: float) -> Check:
    fractions = {r.eps: int((~r.correct[fgsm] & r.correct[pgd]).sum()) / r.n_examples for r in results}
    detail = ", ".join(f"eps {e:g}: {_pct(f)}" for e, f in fractions.items())
    return Check("iterative-beats-single-step", _status(max(fractions.values()) <= tol),
                 f"examples fooled by FGSM but not by {show[pgd]}: {detail} (warn above {_pct(tol)})",
                 {"fgsm_only_fraction": fractions})


def _restarts(results: Sequence[StrongRobustnessResult], pgd: str, strong: str, show: Mapping[str, str],
              tol: float) -> Check:
    pairs = {r.eps: (r.accuracy[pgd], r.accuracy[strong]) for r in results}
    drop = max(a - b for a, b in pairs.values())
    detail = ", ".join(f"eps {e:g}: {_pct(a)} -> {_pct(b)}" for e, (a, b) in pairs.items())
    return Check("more-iterations-and-restarts", _status(drop <= tol),
                 f"accuracy {show[pgd]} -> {show[strong]}: {detail} (warn on a drop above {100 * tol:.1f} pp)",
                 {"accuracy": pairs, "max_drop": drop})


def _noise(results: Sequence[StrongRobustnessResult], attacks: Sequence[str], noise: str, show: Mapping[str, str],
           tol: float, draws: int = 1) -> Check:
    rows, ok = [], True
    for r in results:
        strongest = max(r.accuracy[a] for a in attacks)
        ok &= r.accuracy[noise] + tol >= strongest
        rows.append(f"eps {r.eps:g}: noise {_pct(r.accuracy[noise])} vs "
                    + " / ".join(f"{show[a]} {_pct(r.accuracy[a])}" for a in attacks))
    return Check("noise-weaker-than-attacks", _status(ok),
                 "; ".join(rows) + f" (noise: worst of {draws} draw(s) per example; warn if noise beats an attack "
                 f"by more than {100 * tol:.1f} pp)",
                 {"accuracy": {r.eps: {show.get(a, a): r.accuracy[a] for a in (*attacks, noise)} for r in results}})


def monotonic_check(curves: Mapping[str, Sequence[tuple[float, float]]], tol: float) -> Check:
    """Warn when any attack's accuracy rises with eps; ``curves`` maps a label to (eps, accuracy)
    points sorted by eps.  A rising single-step curve is the classic sign of a masked or
    catastrophically overfitted model (FGSM-trained models often show it)."""
    rises = {label: max([b - a for (_, a), (_, b) in zip(curve, curve[1:])] + [0.0])
             for label, curve in curves.items()}
    worst = max(rises, key=rises.get)
    rise = rises[worst]
    details = ["{} accuracy {}".format(label, " -> ".join(f"{_pct(a)} (eps {e:g})" for e, a in curve))
               for label, curve in curves.items()]
    verdict = f"; {worst} accuracy rises by {100 * rise:.1f} pp" if rise > tol else ""
    return Check("monotonic-in-eps", _status(rise <= tol),
                 "; ".join(details) + f" (warn on a rise above {100 * tol:.1f} pp){verdict}",
                 {"curves": {label: list(curve) for label, curve in curves.items()},
                  "curve": list(curves[list(curves)[-1]]), "max_rise": rise, "worst": worst})


def _chance(accuracy: float, eps: float, label: str, chance: float, factor: float) -> Check:
    return Check("reaches-chance", _status(accuracy <= factor * chance),
                 f"{label} accuracy at eps {eps:g}: {_pct(accuracy)} (chance {_pct(chance)}, warn above "
                 f"{_pct(factor * chance)})", {"accuracy": accuracy, "chance": chance})


# --------------------------------------------------------------------------- entry point

def gradient_masking_checks(model: nn.Module, loader: Iterable, eps_list: Sequence[float],
                            device: str | torch.device = "cpu", max_batches: int | None = None, *,
                            large_eps: float | None = None, num_classes: int | None = None, pgd_steps: int = 20,
                            restarts: int = 3, noise_samples: int = 8, seed: int = 0,
                            single_step_tolerance: float = 0.02, restart_tolerance: float = 0.03,
                            noise_tolerance: float = 0.02, monotonic_tolerance: float = 0.02,
                            chance_factor: float = 1.5, grad_threshold: float = 1e-20,
                            zero_grad_tolerance: float = 0.05, before_forward: Callable[[], Any] | None = None,
                            eot_samples: int = 1, only: Sequence[str] | None = None) -> list[Check]:
    """Run the gradient-masking checks on the examples of ``loader`` (pixels in [0, 1],
    true labels; at most ``max_batches`` batches, moved to ``device``) and return one
    [`Check`][odezoo.experiments.masking.Check] per criterion, in the order of
    `CHECKS` (``only`` selects some).

    Attack checks use every eps of ``eps_list`` (pixel units): FGSM, PGD with ``pgd_steps``
    steps of 2.5·eps/steps and one random start, PGD with ``2 · pgd_steps`` steps and
    ``restarts`` restarts, and ``noise_samples`` uniform noise draws; ``large_eps`` (default:
    twice the largest eps, at most 0.5) adds a PGD run for the chance check (``num_classes``
    defaults to the logits' width).  Randomized models: ``before_forward()`` runs before every
    forward pass (e.g. ``meta.resample``) and attacks average ``eot_samples`` passes.  The
    model runs in eval mode with parameter gradients off (restored afterwards).  If the input
    gradient is missing, the attack checks warn without running."""
    selected = tuple(CHECKS if only is None else only)
    unknown = [name for name in selected if name not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; choose from {CHECKS}")
    eps_values = sorted({positive_number(e, "eps") for e in eps_list})
    if not eps_values:
        raise ValueError("eps_list must hold at least one eps (pixel units, e.g. (0.1, 0.2, 0.3) for MNIST)")
    large_eps = min(0.5, 2 * eps_values[-1]) if large_eps is None else positive_number(large_eps, "large_eps")
    if int(pgd_steps) != pgd_steps or pgd_steps < 1 or int(restarts) != restarts or restarts < 1:
        raise ValueError(f"pgd_steps and restarts must be integers >= 1, got {pgd_steps}, {restarts}")
    batches = []
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batches.append((x.to(device), y.to(device)))
    if not batches:
        raise ValueError("the loader yielded no examples (empty dataset or max_batches=0)")

    adv = import_advertorch()
    found: dict[str, Check] = {}
    with adv.context.ctx_noparamgrad_and_eval(model):
        if num_classes is None:
            with torch.no_grad():
                num_classes = int(model(batches[0][0][:1]).shape[-1])
        if "deterministic-forward" in selected:
            found["deterministic-forward"] = _determinism(model, batches, before_forward, int(eot_samples))
        gradient, has_gradient = _gradients(model, batches, grad_threshold, zero_grad_tolerance)
        if "input-gradients" in selected:
            found["input-gradients"] = gradient

        wanted = [name for name in _ATTACK_CHECKS if name in selected]
        if wanted and not has_gradient:
            for name in wanted:
                found[name] = Check(name, "warn", "not run: " + gradient.detail)
        elif wanted:
            found.update(_attack_checks(model, batches, wanted, eps_values, large_eps, int(num_classes),
                                        int(pgd_steps), int(restarts), int(noise_samples), seed,
                                        single_step_tolerance, restart_tolerance, noise_tolerance,
                                        monotonic_tolerance, chance_factor, before_forward, int(eot_samples)))
    return [found[name] for name in CHECKS if name in found]


def _attack_checks(model, batches, wanted, eps_values, large_eps, num_classes, steps, restarts, noise_samples, seed,
                   single_tol, restart_tol, noise_tol, monotonic_tol, chance_factor, before_forward=None,
                   eot_samples=1) -> dict[str, Check]:
    fgsm_attack = Attack("fgsm", eot_samples=eot_samples)
    pgd_attack = Attack("pgd", steps=steps, step_size="2.5*eps/steps", eot_samples=eot_samples)
    strong_attack = Attack("pgd", steps=2 * steps, step_size="2.5*eps/steps", restarts=restarts,
                           eot_samples=eot_samples)
    noise_attack = Attack("noise", samples=max(noise_samples, 1))
    fgsm, pgd, strong = fgsm_attack.name, pgd_attack.name, strong_attack.name
    show = {fgsm: "FGSM", pgd: f"PGD-{steps}", strong: f"PGD-{2 * steps}x{restarts}", noise_attack.name: "noise"}
    need_eps_runs = any(name in wanted for name in _ATTACK_CHECKS[:4])
    need_strong = "more-iterations-and-restarts" in wanted
    need_noise = "noise-weaker-than-attacks" in wanted

    def run(eps: float, full: bool) -> StrongRobustnessResult:
        attacks = [fgsm_attack, pgd_attack] + ([strong_attack] if full and need_strong else []) \
            + ([noise_attack] if full and need_noise and noise_samples else [])
        return strong_robustness(model, batches, eps, attacks=attacks, seed=seed, before_batch=before_forward)

    results = [run(e, True) for e in eps_values] if need_eps_runs else []
    large = next((r for r in results if r.eps == large_eps), None)
    if large is None and ("reaches-chance" in wanted or "monotonic-in-eps" in wanted):
        large = run(large_eps, False)
    out = {}
    if "iterative-beats-single-step" in wanted:
        out["iterative-beats-single-step"] = _iterative(results, fgsm, pgd, show, single_tol)
    if "more-iterations-and-restarts" in wanted:
        out["more-iterations-and-restarts"] = _restarts(results, pgd, strong, show, restart_tol)
    if "noise-weaker-than-attacks" in wanted:
        attacks = (fgsm, pgd, strong) if need_strong else (fgsm, pgd)
        out["noise-weaker-than-attacks"] = _noise(results, attacks, noise_attack.name, show, noise_tol, noise_samples)
    if "monotonic-in-eps" in wanted:
        clean = (results[0] if results else large).clean_accuracy
        curves = {}
        for attack in (fgsm, pgd):  # the PGD curve last: values["curve"] is PGD's
            curve = [(0.0, clean)] + [(r.eps, r.accuracy[attack]) for r in results]
            if large.eps not in eps_values:
                curve.append((large.eps, large.accuracy[attack]))
            curves[show[attack]] = sorted(curve, key=lambda point: point[0])
        out["monotonic-in-eps"] = monotonic_check(curves, monotonic_tol)
    if "reaches-chance" in wanted:
        out["reaches-chance"] = _chance(large.accuracy[pgd], large.eps, show[pgd], 1 / num_classes, chance_factor)
    return out

