"""Building blocks for training recipes: adversarial training perturbations, divergence
checks, accuracy, seeding, devices.  The loops themselves live in ``recipes/`` (readable
scripts, not a framework); checkpoints and logs are in [`odezoo.experiments.io`][odezoo.experiments.io]."""
from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
from torch import nn

from .attacks import pgd_step_size

__all__ = ["TrainingDiverged", "adversarial_batch", "check_loss", "accuracy", "seed_everything", "resolve_device",
           "setup_distributed", "ADVERSARIAL_KINDS"]

ADVERSARIAL_KINDS = ("none", "fgsm", "fgsm_random", "pgd")


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or exploded; the last good checkpoint is kept."""


def adversarial_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str, eps: float,
                      alpha: float | None = None, steps: int = 7, step_size: float | None = None) -> torch.Tensor:
    """Inputs for adversarial training (pixels in [0, 1], ``eps`` in pixel units).

    * ``fgsm``: x + eps·sign(∇x loss);
    * ``fgsm_random`` (Wong, Rice & Kolter 2020): δ ~ U[-eps, eps], one signed step of
      ``alpha`` (default 1.25·eps), δ projected to the eps-ball and x + δ to [0, 1];
    * ``pgd``: ``steps`` signed steps of ``step_size`` (default 2.5·eps/steps) from a random start.

    Only the input gets a gradient; the model's parameter gradients are left untouched.
    """
    if kind == "none" or eps == 0:
        return x
    if kind not in ADVERSARIAL_KINDS:
        raise ValueError(f"unknown adversarial training kind {kind!r}; choose one of {ADVERSARIAL_KINDS}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"adversarial eps must be positive (pixel units), got {eps!r}")
    if kind == "fgsm":
        delta = torch.zeros_like(x)
        n_steps, size = 1, eps
    elif kind == "fgsm_random":
        delta = (torch.rand_like(x) * 2 - 1) * eps
        n_steps, size = 1, 1.25 * eps if alpha is None else alpha
    else:
        delta = (torch.rand_like(x) * 2 - 1) * eps
        n_steps, size = steps, pgd_step_size(eps, steps, step_size)
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(n_steps):
        delta.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + size * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def check_loss(loss: torch.Tensor, where: str, limit: float = 1e4, checkpoint: str | None = None) -> float:
    """Return ``loss`` as a float, or raise [`TrainingDiverged`][odezoo.experiments.training.TrainingDiverged] if
    it is NaN, infinite
    or above ``limit``."""
    value = float(loss.detach())
    if math.isfinite(value) and value <= limit:
        return value
    kept = f" The last good checkpoint is kept at {checkpoint}." if checkpoint else ""
    raise TrainingDiverged(
        f"training diverged at {where}: loss = {value} (limit {limit:g}).{kept} Lower the learning rate "
        f"(max_lr), use more solver steps, or narrow the smoothing distribution, then resume with --resume.")


@torch.no_grad()
def accuracy(model: nn.Module, loader, device="cpu", max_batches: int | None = None) -> float:
    """Top-1 accuracy in [0, 1] (model put in eval mode and restored)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device), y.to(device)
        correct += int((model(x).argmax(-1) == y).sum())
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (every device) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``ValueError`` for ``cuda`` without a CUDA device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def setup_distributed(device_name: str = "auto") -> tuple[int, int, torch.device]:
    """``(rank, world size, device)``; under ``torchrun`` (``WORLD_SIZE`` > 1) this also joins
    the process group (NCCL on CUDA, where each rank takes its ``LOCAL_RANK`` GPU; gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, resolve_device(device_name)
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device
