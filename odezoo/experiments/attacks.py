"""Attacks: advertorch's FGSM and L∞ PGD, EOT, AutoAttack components from torchattacks.

Conventions (DESIGN.md): inputs are pixels in [0, 1] (normalization lives inside the
model), ``eps`` and ``step_size`` are in pixel units (MNIST 0.3, CIFAR-10 8/255), attacks
always use the **true labels**, the model runs in eval mode with parameter gradients off
(restored afterwards), and accuracies are fractions in [0, 1].

advertorch 0.2.3 predates torch 1.9; [`import_advertorch`][odezoo.experiments.attacks.import_advertorch] makes it
importable on
current torch (see its docstring for what it patches).
"""
from __future__ import annotations

import contextlib
import importlib
import io
import math
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["ATTACKS", "AUTOATTACK_VERSIONS", "import_advertorch", "import_torchattacks", "zero_gradients",
           "check_attack_inputs", "positive_number", "pgd_step_size", "fgsm", "pgd", "EOTModel",
           "correct_predictions", "uniform_noise", "autoattack_components", "run_torchattack"]

ATTACKS = ("fgsm", "pgd")
AUTOATTACK_VERSIONS = ("standard", "fast")


# --------------------------------------------------------------------------- advertorch shim

def zero_gradients(x: torch.Tensor | Iterable) -> None:
    """Zero ``.grad`` of a tensor or of every tensor in a (nested) iterable, in place.

    The helper torch removed from ``torch.autograd.gradcheck`` in 1.9 (same semantics)."""
    if isinstance(x, torch.Tensor):
        if x.grad is not None:
            x.grad.detach_()
            x.grad.zero_()
    elif isinstance(x, Iterable) and not isinstance(x, (str, bytes)):
        for item in x:
            zero_gradients(item)


def import_advertorch() -> ModuleType:
    """Import advertorch (with ``attacks`` and ``context``) on current torch; idempotent.

    ``advertorch/attacks/fast_adaptive_boundary.py`` does ``from torch.autograd.gradcheck
    import zero_gradients``, removed in torch 1.9; we put
    [`zero_gradients`][odezoo.experiments.attacks.zero_gradients] back on that
    *module* (``importlib.import_module``: ``import torch.autograd.gradcheck as m`` would give
    the function of the same name).  The other pitfalls on current torch — attacks crash
    under ``torch.no_grad()``, reject ``int`` / numpy-float32 / 0-d-tensor eps with a bare
    ``AssertionError`` / ``TypeError``, and fail with an ``AttributeError`` on ``None``
    gradients — are handled in [`fgsm`][odezoo.experiments.attacks.fgsm] and
    [`pgd`][odezoo.experiments.attacks.pgd], which enable grad, coerce eps
    to float and explain the missing gradient.
    """
    gradcheck = importlib.import_module("torch.autograd.gradcheck")
    if not hasattr(gradcheck, "zero_gradients"):
        gradcheck.zero_gradients = zero_gradients
    try:
        advertorch = importlib.import_module("advertorch")
        importlib.import_module("advertorch.attacks")
        importlib.import_module("advertorch.context")
    except ImportError as error:
        missing = "torchvision (advertorch imports it)" if "torchvision" in str(error) else "advertorch"
        raise ImportError(f"robustness evaluation needs {missing}: pip install advertorch==0.2.3 torchvision "
                          f"(or pip install 'odezoo[recipes]'); import failed with: {error}") from error
    return advertorch


# --------------------------------------------------------------------------- attacks

def check_attack_inputs(x: torch.Tensor, y: torch.Tensor | None, eps: Any, name: str = "eps") -> float:
    """Check an attack's inputs (true int64 labels, pixels in [0, 1]); return ``eps`` as a float."""
    if y is None:
        raise TypeError("attacks need the true labels y (advertorch would otherwise attack the model's own "
                        "predictions, which overstates robustness)")
    if y.dtype != torch.int64 or y.shape != x.shape[:1]:
        raise ValueError(f"y must be int64 class labels of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}; "
                         f"use y.long()")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(f"attacks expect pixels in [0, 1] (got [{float(x.min()):.3g}, {float(x.max()):.3g}]): "
                         f"normalize inside the model, not in the data pipeline")
    return positive_number(eps, name, allow_zero=True)


def positive_number(value: Any, name: str, allow_zero: bool = False) -> float:
    """``value`` as a finite positive (or non-negative) float in pixel units; a clear error otherwise."""
    try:
        value = float(value)  # advertorch asserts a Python float (or a per-example tensor)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in pixel units, got {value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'} and finite "
                         f"(pixel units, e.g. 0.3 or 8/255), got {value}")
    return value


def _run(attack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    try:
        with torch.enable_grad():
            return attack.perturb(x, y).detach()
    except (AttributeError, RuntimeError) as error:
        if "NoneType" not in str(error) and "does not require grad" not in str(error):
            raise
        raise RuntimeError("the attack got no gradient w.r.t. the input: the model's output does not depend "
                           "differentiably on x (detached input, torch.no_grad or integer ops in forward?)") from error


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM (advertorch ``GradientSignAttack``): ``clip(x + eps·sign(∇x CE_sum(model(x), y)), 0, 1)``.

    ``x``: pixels in [0, 1]; ``y``: true labels; ``eps`` in pixel units.  Runs with the model
    in eval mode and parameter gradients off; both are restored afterwards."""
    eps = check_attack_inputs(x, y, eps)
    adv = import_advertorch()
    attack = adv.attacks.GradientSignAttack(model, loss_fn=nn.CrossEntropyLoss(reduction="sum"), eps=eps,
                                            clip_min=0.0, clip_max=1.0, targeted=False)
    with adv.context.ctx_noparamgrad_and_eval(model):
        return _run(attack, x, y)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float = 2 / 255,
        n_iter: int = 7, restarts: int = 1, rand_init: bool = True, seed: int | None = None) -> torch.Tensor:
    """L∞ PGD (advertorch ``LinfPGDAttack``): ``n_iter`` signed steps of ``step_size`` on
    CE_sum w.r.t. the true labels, projected to the ``eps`` ball and [0, 1] (pixel units).

    With ``restarts > 1`` each example keeps the first restart that fools the model, else the
    one with the highest loss; restarts after the first attack only the examples not yet
    fooled (a fooled example is final, so the cost falls with the number of survivors).
    ``seed`` fixes the random starts (the global RNG is restored afterwards), so restart 0
    equals a single-restart run with the same seed."""
    eps = check_attack_inputs(x, y, eps)
    step_size = positive_number(step_size, "step_size")
    if int(n_iter) != n_iter or n_iter < 0 or int(restarts) != restarts or restarts < 1:
        raise ValueError(f"n_iter must be an integer >= 0 and restarts >= 1, got n_iter={n_iter}, restarts={restarts}")
    adv = import_advertorch()
    attack = adv.attacks.LinfPGDAttack(model, loss_fn=nn.CrossEntropyLoss(reduction="sum"), eps=eps,
                                       nb_iter=int(n_iter), eps_iter=step_size, rand_init=rand_init,
                                       clip_min=0.0, clip_max=1.0, targeted=False)
    devices = list(range(torch.cuda.device_count())) if x.is_cuda else []
    with adv.context.ctx_noparamgrad_and_eval(model), torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        best = _run(attack, x, y)
        if restarts == 1:
            return best
        best_loss, fooled = _loss_and_fooled(model, best, y)
        for _ in range(int(restarts) - 1):
            todo = (~fooled).nonzero().flatten()  # later restarts attack only the survivors
            if not todo.numel():
                break
            candidate = _run(attack, x[todo], y[todo])
            loss, wrong = _loss_and_fooled(model, candidate, y[todo])
            take = wrong | (loss > best_loss[todo])
            index = todo[take]
            best[index], best_loss[index] = candidate[take], loss[take]
            fooled[index] |= wrong[take]
        return best


@torch.no_grad()
def _loss_and_fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(x)
    return nn.functional.cross_entropy(logits, y, reduction="none"), logits.argmax(-1) != y


# --------------------------------------------------------------------------- EOT

class EOTModel(nn.Module):
    """Expectation over transformation: ``forward`` averages the logits of ``samples``
    forward passes of ``model``, each preceded by ``before_forward()`` (e.g. a MetaSolver's
    ``resample``), so an attack's gradient is the average over that randomness."""

    def __init__(self, model: nn.Module, samples: int = 1, before_forward: Callable[[], Any] | None = None):
        super().__init__()
        if int(samples) != samples or samples < 1:
            raise ValueError(f"eot samples must be an integer >= 1, got {samples!r}")
        self.model, self.samples, self.before_forward = model, int(samples), before_forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for _ in range(self.samples):
            if self.before_forward is not None:
                self.before_forward()
            logits = self.model(x)
            total = logits if total is None else total + logits
        return total / self.samples


# --------------------------------------------------------------------------- helpers shared by evaluations

def pgd_step_size(eps: float, steps: int, step_size: float | str | None = "auto") -> float:
    """PGD step size in pixels: ``step_size`` itself when it is a number, else (``"auto"`` or
    None) ``2.5 · eps / steps`` (Madry et al. 2018), which lets the iterates cross the whole
    eps-ball — the paper's fixed 2/255 × 7 steps cannot at eps 0.3."""
    if step_size in ("auto", None):
        return 2.5 * float(eps) / max(int(steps), 1)
    return positive_number(step_size, "step_size")


def correct_predictions(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        before_batch: Callable[[], Any] | None = None) -> torch.Tensor:
    """Per example: whether ``model`` classifies ``x`` as ``y`` (one forward pass, no grad);
    ``before_batch()`` runs first (e.g. a randomized solver's ``resample``)."""
    if before_batch is not None:
        before_batch()
    with torch.no_grad():
        return model(x).argmax(-1) == y


def uniform_noise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x`` plus uniform noise in the eps-ball, clipped to [0, 1] (a baseline, not an attack)."""
    return (x + eps * (2 * torch.rand_like(x) - 1)).clamp(0, 1)


# --------------------------------------------------------------------------- AutoAttack (torchattacks)

def import_torchattacks():
    """Import torchattacks (>= 3.5) with a helpful message when it is missing."""
    try:
        import torchattacks
    except ImportError as error:
        raise ImportError("AutoAttack needs torchattacks: pip install 'odezoo[attacks]' "
                          f"(torchattacks>=3.5); import failed with: {error}") from error
    return torchattacks


def autoattack_components(ta, model: nn.Module, eps: float, version: str, steps: int, square_queries: int,
                          n_classes: int, seed: int) -> list[tuple[str, str, Any]]:
    """(name, description, torchattacks attack) of AutoAttack's components in cascade order.

    ``version="standard"``: APGD-CE, APGD-T, FAB-T, Square (Croce & Hein 2020);
    ``"fast"``: APGD-CE then untargeted APGD-DLR."""
    if version not in AUTOATTACK_VERSIONS:
        raise ValueError(f"unknown AutoAttack version {version!r}; choose from {AUTOATTACK_VERSIONS}")
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


def run_torchattack(attack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Run a torchattacks attack on ``(x, y)`` without disturbing the caller's RNG stream."""
    attack.set_device(x.device)
    devices = list(range(torch.cuda.device_count())) if x.is_cuda else []
    # torchattacks reseeds the global RNG: keep the caller's stream untouched
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        return attack(x, y).detach()
