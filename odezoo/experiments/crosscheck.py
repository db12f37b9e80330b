"""Cross-checks of the attack libraries on shared images: does an attack measure the same thing
whichever implementation runs it?

* [`pgd_agreement`][odezoo.experiments.crosscheck.pgd_agreement]: L∞ PGD without a random start is
  deterministic, so advertorch's ``LinfPGDAttack`` (what odezoo's protocols run), torchattacks'
  ``PGD`` and the few lines of plain torch below (odezoo's own reference) must give the same
  adversarial images up to float rounding, and the same predictions on them.
* [`autoattack_agreement`][odezoo.experiments.crosscheck.autoattack_agreement]: standard AutoAttack
  as odezoo runs it (torchattacks' components in the original cascade, ``autoattack-standard``)
  against the authors' reference implementation (``pyautoattack``, Croce & Hein).  Both are
  randomized searches with their own random streams, so they need not fool the same images; the
  check reports both robust accuracies on the same images, how many images only one of them
  fooled, and the 95 % interval of the difference — a difference beyond it means one
  implementation is weaker.

Both take pixels in [0, 1] and true labels, and put the model in eval mode with parameter
gradients off (restored afterwards).
"""
from __future__ import annotations

import contextlib
import io
import math
from typing import Any

import torch
from torch import nn

from .attack_registry import Attack, Batch
from .attacks import check_attack_inputs, correct_predictions, import_advertorch, import_torchattacks

__all__ = ["reference_pgd", "pgd_agreement", "autoattack_agreement", "import_reference_autoattack"]


def reference_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float,
                  steps: int) -> torch.Tensor:
    """L∞ PGD from the clean image (no random start): ``steps`` signed steps of ``step_size`` on the
    summed cross-entropy w.r.t. the true labels, projected to the ε ball and [0, 1]."""
    x_adv = x.clone().detach()
    for _ in range(int(steps)):
        x_adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def pgd_agreement(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float = 2 / 255,
                  steps: int = 7) -> dict[str, Any]:
    """PGD by advertorch, torchattacks and `reference_pgd` on the same images, all from the clean
    image: the largest pixel difference between each pair of adversarial batches, and the
    robust accuracy under each (they agree when the three implementations do)."""
    eps = check_attack_inputs(x, y, eps)
    adv, ta = import_advertorch(), import_torchattacks()
    was_training = model.training
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            images = {
                "advertorch": adv.attacks.LinfPGDAttack(model, loss_fn=nn.CrossEntropyLoss(reduction="sum"), eps=eps,
                                                        nb_iter=int(steps), eps_iter=step_size, rand_init=False,
                                                        clip_min=0.0, clip_max=1.0).perturb(x, y).detach(),
                "torchattacks": _quiet(lambda: ta.PGD(model, eps=eps, alpha=step_size, steps=int(steps),
                                                      random_start=False))(x, y).detach(),
                "odezoo": reference_pgd(model, x, y, eps, step_size, steps),
            }
    finally:
        model.train(was_training)
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
    names = list(images)
    out: dict[str, Any] = {"n_images": int(len(y)), "eps": eps, "steps": int(steps), "step_size": step_size}
    for name in names:
        out[f"accuracy_{name}"] = float(correct_predictions(model, images[name], y).float().mean())
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            out[f"max_diff_{a}_{b}"] = float((images[a] - images[b]).abs().max())
    return out


def _quiet(build):
    with contextlib.redirect_stdout(io.StringIO()):  # torchattacks prints for parameter-free models
        return build()


def import_reference_autoattack():
    """The authors' AutoAttack (``pyautoattack``), with a clear message when it is missing."""
    try:
        import pyautoattack
    except ImportError as error:
        raise ImportError("the AutoAttack cross-check needs the authors' implementation: pip install "
                          f"'odezoo[crosscheck]' (pyautoattack); import failed with: {error}") from error
    return pyautoattack


def autoattack_agreement(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 100,
                         square_queries: int = 5000, seed: int = 0,
                         torchattacks_correct: torch.Tensor | None = None) -> dict[str, Any]:
    """Standard AutoAttack by torchattacks' components (odezoo's ``autoattack-standard``, or its
    ``-Nit-Mq`` variant for other budgets) and by the authors' ``pyautoattack`` on the same images.

    ``torchattacks_correct``: the per-example result odezoo already has for these images (a
    protocol's ``autoattack-standard`` column), so it is not run twice.  Returns both robust
    accuracies, the images only one implementation fooled (b: torchattacks only, c: the reference
    only) and the accuracy difference (c − b)/n with the half-width of its 95 % Wald interval for
    paired proportions, 1.96·√(((b + c)/n − ((c − b)/n)²)/n)."""
    eps = check_attack_inputs(x, y, eps)
    n = len(y)
    attack = Attack("autoattack", version="standard", steps=steps, square_queries=square_queries)
    with torch.no_grad():
        logits = model(x)
    clean = logits.argmax(-1) == y
    if torchattacks_correct is None:
        adv = import_advertorch()
        with adv.context.ctx_noparamgrad_and_eval(model):
            torchattacks_correct, _ = attack.run(Batch(model=model, attacked=model, x=x, y=y, eps=eps, clean=clean,
                                                       seed=seed, n_classes=logits.shape[-1]))
    torchattacks_correct = torchattacks_correct.cpu().bool()[:n]

    reference = import_reference_autoattack()
    was_training = model.training
    model.eval()
    try:
        runner = reference.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device=x.device)
        runner.verbose = False
        runner.apgd.n_iter = runner.apgd_targeted.n_iter = runner.fab.n_iter = int(steps)
        runner.square.n_queries = int(square_queries)
        x_adv = runner.run_standard_evaluation(x, y, batch_size=max(n, 1))
        if isinstance(x_adv, tuple):
            x_adv = x_adv[0]
        with torch.no_grad():
            reference_correct = (model(x_adv).argmax(-1) == y).cpu() & clean.cpu()
    finally:
        model.train(was_training)
    only_ta = int((~torchattacks_correct & reference_correct).sum())   # fooled by torchattacks only
    only_ref = int((torchattacks_correct & ~reference_correct).sum())  # fooled by the reference only
    diff = (only_ref - only_ta) / n  # torchattacks accuracy − reference accuracy
    se = math.sqrt(max((only_ta + only_ref) / n - diff ** 2, 0.0) / n) if n > 1 else float("nan")
    return {"n_images": n, "eps": eps, "attack": attack.name, "clean": float(clean.float().mean()),
            "accuracy_torchattacks": float(torchattacks_correct.float().mean()),
            "accuracy_reference": float(reference_correct.float().mean()),
            "only_torchattacks_fooled": only_ta, "only_reference_fooled": only_ref,
            "difference": diff, "difference_ci95": 1.959963984540054 * se}
