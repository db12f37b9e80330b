"""The paper's neural ODE classifiers (appendix A), built on `ODEBlock`.

Inputs are images in [0, 1]; normalization happens inside the model, so attacks work in
pixel units.  Every ODE block integrates over t ∈ [0, 1] with the given solver (a
``MetaSolver`` shared by all blocks of the model, or a ``SolverSpec``).
"""
from __future__ import annotations

import torch
from torch import nn

from odezoo import MetaSolver, ODEBlock, SolverSpec

__all__ = ["MnistODENet", "Cifar10ODENet", "count_parameters", "build_model", "MODELS"]

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


class ConcatConv2d(nn.Module):
    """Conv2d over the input with one extra channel holding t (as in torchdiffeq's examples).
    ``t`` may be a scalar or a per-sample tensor of shape (batch, 1, 1, 1)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, kernel_size, padding=padding)

    def forward(self, t, x):
        tt = torch.ones_like(x[:, :1]) * t
        return self.conv(torch.cat([tt, x], dim=1))


class MnistODEFunc(nn.Module):
    """f(t, x) = GN ReLU ConcatConv GN ReLU ConcatConv GN (appendix A.1)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = ConcatConv2d(channels, channels)
        self.norm2 = group_norm(channels)
        self.conv2 = ConcatConv2d(channels, channels)
        self.norm3 = group_norm(channels)
        self.relu = nn.ReLU()

    def forward(self, t, x):
        out = self.conv1(t, self.relu(self.norm1(x)))
        out = self.conv2(t, self.relu(self.norm2(out)))
        return self.norm3(out)


class MnistODENet(nn.Module):
    """MNIST ODE network (appendix A.1; ~208k parameters): a convolutional downsampler to
    64 × 6 × 6, one ODE block, then ReLU, average pooling and a linear layer."""

    def __init__(self, solver: MetaSolver | SolverSpec, channels: int = 64, adjoint: bool = False):
        super().__init__()
        self.solver = MetaSolver.of(solver)
        self.normalize = Normalize(MNIST_MEAN, MNIST_STD)
        self.downsample = nn.Sequential(
            nn.Conv2d(1, channels, 3, 1), group_norm(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 4, 2, 1), group_norm(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 4, 2, 1),
        )
        self.ode = ODEBlock(MnistODEFunc(channels), self.solver, adjoint=adjoint)
        self.head = nn.Sequential(group_norm(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(channels, 10))

    def forward(self, x):
        return self.head(self.ode(self.downsample(self.normalize(x))))


class PreBasicBlock(nn.Module):
    """Pre-activation residual block (norm GeLU conv norm GeLU conv) with an optional conv skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm=nn.BatchNorm2d):
        super().__init__()
        self.bn1 = norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.act = nn.GELU()
        self.skip = None
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def residual(self, x):
        out = self.act(self.bn1(x))
        shortcut = self.skip(out) if self.skip is not None else x
        return self.conv2(self.act(self.bn2(self.conv1(out)))), shortcut

    def forward(self, x):
        out, shortcut = self.residual(x)
        return out + shortcut


class PreBasicODEFunc(nn.Module):
    """The residual branch of a PreBasicBlock as an (autonomous) ODE function.

    It uses GroupNorm, not BatchNorm: inside an ODE block the function is evaluated at every
    stage of every step, and BatchNorm's running statistics then average over all of those
    different inputs, so the evaluation-mode network no longer matches the trained one
    (seen here: 93% training but 27% validation accuracy)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = PreBasicBlock(channels, channels, norm=group_norm)

    def forward(self, t, x):
        return self.block.residual(x)[0]


class Cifar10ODENet(nn.Module):
    """CIFAR-10 ODE network (appendix A.2, section 5.2): Conv → PreBasicBlock(64) →
    ODE(PreBasicBlock 64) → PreBasicBlock(64→128, conv skip) → ODE(PreBasicBlock 128) →
    GeLU → AvgPool → Linear(128, 10).  Both ODE blocks share one MetaSolver.  ``width``
    scales the channels (64 in the paper)."""

    def __init__(self, solver: MetaSolver | SolverSpec, width: int = 64, adjoint: bool = False):
        super().__init__()
        self.solver = MetaSolver.of(solver)
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.block1 = PreBasicBlock(width, width)
        self.ode1 = ODEBlock(PreBasicODEFunc(width), self.solver, adjoint=adjoint)
        self.block2 = PreBasicBlock(width, 2 * width, stride=2)
        self.ode2 = ODEBlock(PreBasicODEFunc(2 * width), self.solver, adjoint=adjoint)
        self.head = nn.Sequential(nn.BatchNorm2d(2 * width), nn.GELU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(2 * width, 10))

    def forward(self, x):
        x = self.block1(self.stem(self.normalize(x)))
        x = self.block2(self.ode1(x))
        return self.head(self.ode2(x))


MODELS = {"mnist": MnistODENet, "cifar10": Cifar10ODENet}


def build_model(name: str, solver, **kwargs) -> nn.Module:
    """The model called ``name`` in ``MODELS`` (``mnist``, ``cifar10``) integrating with ``solver``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](solver, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """The number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
