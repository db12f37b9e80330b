"""Adversarial robustness with advertorch's FGSM and L∞ PGD.

Conventions (DESIGN.md): inputs are pixels in [0, 1] (normalization lives inside the
model), ``eps`` and ``step_size`` are in pixel units (MNIST 0.3, CIFAR-10 8/255), attacks
always use the **true labels**, the model runs in eval mode with parameter gradients off
(restored afterwards), and accuracies are fractions in [0, 1].

advertorch 0.2.3 predates torch 1.9; :func:`import_advertorch` makes it importable on
current torch (see its docstring for what it patches).
"""
from __future__ import annotations

import csv
import importlib
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["ATTACKS", "import_advertorch", "zero_gradients", "fgsm", "pgd", "EOTModel", "RobustnessResult",
           "evaluate_robustness", "results_table", "save_json", "save_csv"]

ATTACKS = ("fgsm", "pgd")


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
    import zero_gradients``, removed in torch 1.9; we put :func:`zero_gradients` back on that
    *module* (``importlib.import_module``: ``import torch.autograd.gradcheck as m`` would give
    the function of the same name).  The other pitfalls on current torch — attacks crash
    under ``torch.no_grad()``, reject ``int`` / numpy-float32 / 0-d-tensor eps with a bare
    ``AssertionError`` / ``TypeError``, and fail with an ``AttributeError`` on ``None``
    gradients — are handled in :func:`fgsm` and :func:`pgd`, which enable grad, coerce eps
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

def _check_inputs(x: torch.Tensor, y: torch.Tensor | None, eps: Any, name: str = "eps") -> float:
    if y is None:
        raise TypeError("attacks need the true labels y (advertorch would otherwise attack the model's own "
                        "predictions, which overstates robustness)")
    if y.dtype != torch.int64 or y.shape != x.shape[:1]:
        raise ValueError(f"y must be int64 class labels of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}; "
                         f"use y.long()")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(f"attacks expect pixels in [0, 1] (got [{float(x.min()):.3g}, {float(x.max()):.3g}]): "
                         f"normalize inside the model, not in the data pipeline")
    return _positive(eps, name, allow_zero=True)


def _positive(value: Any, name: str, allow_zero: bool = False) -> float:
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
    eps = _check_inputs(x, y, eps)
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
    one with the highest loss.  ``seed`` fixes the random starts (the global RNG is restored
    afterwards), so restart 0 equals a single-restart run with the same seed."""
    eps = _check_inputs(x, y, eps)
    step_size = _positive(step_size, "step_size")
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
            candidate = _run(attack, x, y)
            loss, wrong = _loss_and_fooled(model, candidate, y)
            take = ~fooled & (wrong | (loss > best_loss))
            best[take], best_loss[take] = candidate[take], loss[take]
            fooled |= take & wrong
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


# --------------------------------------------------------------------------- evaluation

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


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, before_batch: Callable | None) -> torch.Tensor:
    if before_batch is not None:
        before_batch()
    with torch.no_grad():
        return model(x).argmax(-1) == y


def evaluate_robustness(model: nn.Module, loader: Iterable, attacks: Sequence[str] = ATTACKS,
                        eps_list: Sequence[float] = (0.1, 0.2, 0.3), pgd_kwargs: Mapping[str, Any] | None = None,
                        device: str | torch.device = "cpu", max_batches: int | None = None, eot_samples: int = 1,
                        before_batch: Callable[[], Any] | None = None) -> RobustnessResult:
    """Clean accuracy and accuracy under each attack in ``attacks`` at each ``eps`` (pixels).

    ``loader`` yields ``(x in [0, 1], true labels)``; batches are moved to ``device`` (the
    model must already be there).  ``pgd_kwargs`` go to :func:`pgd` (``step_size``,
    ``n_iter``, ``restarts``, ``rand_init``, ``seed``); with a ``seed``, batch ``i`` uses
    ``seed + i``, so the random starts differ between batches and the whole evaluation is
    reproducible.  ``max_batches`` stops early.

    Randomized models: ``before_batch()`` (e.g. ``meta.resample``) is called before every
    prediction and, through :class:`EOTModel`, before every forward pass of an attack.  With
    ``eot_samples > 1`` each attack forward averages the logits of that many passes, so
    the attack follows the expected gradient (EOT); predictions stay single passes, as the
    randomized model would answer when deployed."""
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; choose from {ATTACKS}")
    eps_values = [_positive(e, "eps", allow_zero=True) for e in eps_list]
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
            clean += int(_correct(model, x, y, before_batch).sum())
            for e in eps_values:
                all_ok = torch.ones_like(y, dtype=torch.bool)
                for a in attacks:
                    x_adv = fgsm(attacked, x, y, e) if a == "fgsm" else pgd(attacked, x, y, e, **batch_pgd)
                    ok = _correct(model, x_adv, y, before_batch)
                    hits[(a, e)] += int(ok.sum())
                    all_ok &= ok
                worst[e] += int(all_ok.sum())
            total += len(y)
    if total == 0:
        raise ValueError("the loader yielded no examples (empty dataset or max_batches=0)")
    return RobustnessResult(clean_accuracy=clean / total, accuracy={k: v / total for k, v in hits.items()},
                            n_examples=total, eot_samples=int(eot_samples),
                            worst_case={e: v / total for e, v in worst.items()} if len(attacks) > 1 else {})


# --------------------------------------------------------------------------- tables, files

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


def _atomic_write(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor) or hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_json(path: str | os.PathLike, rows: Any) -> None:
    """Write ``rows`` as indented JSON, atomically (temporary file + ``os.replace``)."""
    _atomic_write(path, json.dumps(rows, indent=2, default=_plain) + "\n")


def save_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write dict rows as CSV (header: union of keys in first-seen order), atomically.
    Nested values (dicts, lists) are written as JSON."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    if columns:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v, default=_plain) if isinstance(v, (dict, list, tuple)) else v
                         for k, v in row.items()})
    _atomic_write(path, buffer.getvalue())
