"""Datasets and loaders: embedded MNIST splits, torchvision error paths, CIFAR split logic.

Nothing here downloads: torchvision datasets are either missing (error path) or a tiny fake
CIFAR-10 written in torchvision's on-disk format."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from odezoo.experiments import data as odata


@pytest.fixture(scope="module")
def embedded():
    return odata.load_embedded_mnist(seed=0)


def _labels(ds):
    return ds.tensors[1]


def test_embedded_sizes_dtypes_and_range(embedded):
    sizes = [len(d) for d in embedded]
    assert sum(sizes) == 5000
    assert sizes == [3500, 500, 1000]
    for ds in embedded:
        x, y = ds.tensors
        assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert float(x.max()) > 0.99  # real 0..255 pixels scaled, not left at 0..1/255


def test_embedded_splits_are_disjoint_and_cover_everything(embedded):
    pixels, labels = odata.embedded_mnist_arrays()
    val_idx, test_idx, train_idx = odata.stratified_split(labels, (0.1, 0.2), seed=0)
    sets = [set(train_idx.tolist()), set(val_idx.tolist()), set(test_idx.tolist())]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set.union(*sets) == set(range(5000))
    # the datasets hold exactly those rows, scaled to [0, 1]
    for ds, idx in zip(embedded, (train_idx, val_idx, test_idx)):
        expected = torch.from_numpy(pixels[idx] / np.float32(255)).reshape(-1, 1, 28, 28)
        assert torch.allclose(ds.tensors[0], expected)
        assert torch.equal(ds.tensors[1], torch.from_numpy(labels[idx]))


@pytest.mark.parametrize("fractions", [(0.1, 0.2), (0.15, 0.25)])
def test_embedded_stratified(fractions):
    val_f, test_f = fractions
    splits = odata.load_embedded_mnist(seed=3, val_fraction=val_f, test_fraction=test_f)
    for ds, frac in zip(splits, (1 - val_f - test_f, val_f, test_f)):
        counts = torch.bincount(_labels(ds), minlength=10)
        assert (counts > 0).all(), "every class must be present in every split"
        assert (counts.float() - 500 * frac).abs().max() <= 1.0


def test_embedded_splits_are_shuffled_not_sorted(embedded):
    # rows arrive sorted by label; the first 50 examples of a split must mix classes
    for ds in embedded:
        assert len(torch.unique(_labels(ds)[:50])) >= 5


def test_embedded_seed_determinism(embedded):
    again = odata.load_embedded_mnist(seed=0)
    other = odata.load_embedded_mnist(seed=1)
    for a, b in zip(embedded, again):
        assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    assert not torch.equal(embedded.test.tensors[0], other.test.tensors[0])


@pytest.mark.parametrize("val,test", [(-0.1, 0.2), (0.5, 0.5), (0.1, 1.0)])
def test_embedded_bad_fractions(val, test):
    with pytest.raises(ValueError, match="fraction"):
        odata.load_embedded_mnist(val_fraction=val, test_fraction=test)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_torchvision_dataset_says_what_to_run(tmp_path, name):
    with pytest.raises(FileNotFoundError) as info:
        odata.get_datasets(name, data_dir=tmp_path)
    message = str(info.value)
    assert "--download" in message and str(tmp_path) in message and "--data-dir" in message
    assert isinstance(info.value, odata.DatasetNotFoundError)
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "nothing may be downloaded"


def test_torchvision_dataset_needs_data_dir():
    with pytest.raises(ValueError, match="--data-dir"):
        odata.get_datasets("cifar10")


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError) as info:
        odata.get_datasets("imagenet")
    assert all(name in str(info.value) for name in odata.DATASETS)


def test_get_datasets_default_is_embedded():
    splits = odata.get_datasets()
    assert sum(len(d) for d in splits) == 5000


# --------------------------------------------------------------------------- fake CIFAR-10

def _write_fake_cifar(root, per_batch=10, n_test=8):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    counter = 0
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        images = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        images[:, 0] = np.arange(counter, counter + n) % 256  # unique id in the first red pixel
        counter += n
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images, "labels": [int(v) for v in rng.integers(0, 10, n)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    # our fake files have other md5 sums than the real ones: accept any existing file
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    _write_fake_cifar(tmp_path)
    return tmp_path


def _transform_names(transform):
    steps = getattr(transform, "transforms", [transform])
    return [type(t).__name__ for t in steps]


def test_cifar_split_80_20_and_augmentation_flags(fake_cifar):
    splits = odata.get_datasets("cifar10", data_dir=fake_cifar, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 8)
    assert not set(splits.train.indices) & set(splits.val.indices)
    assert sorted(splits.train.indices + splits.val.indices) == list(range(50))
    assert _transform_names(splits.train.transform) == ["RandomCrop", "RandomHorizontalFlip", "ToTensor"]
    assert splits.train.transform.transforms[0].padding == 4
    assert _transform_names(splits.val.transform) == ["ToTensor"]
    assert _transform_names(splits.test.transform) == ["ToTensor"]
    for ds in splits:
        x, y = ds[0]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and isinstance(y, int)


def test_cifar_split_seeded(fake_cifar):
    a = odata.load_cifar10(fake_cifar, seed=0)
    b = odata.load_cifar10(fake_cifar, seed=0)
    c = odata.load_cifar10(fake_cifar, seed=1)
    assert a.train.indices == b.train.indices and a.val.indices == b.val.indices
    assert a.val.indices != c.val.indices
    # val images are untransformed: identical on every access
    assert torch.equal(a.val[0][0], a.val[0][0])


def test_cifar_without_augmentation(fake_cifar):
    splits = odata.load_cifar10(fake_cifar, augment=False)
    assert _transform_names(splits.train.transform) == ["ToTensor"]
    assert torch.equal(splits.train[3][0], splits.train[3][0])


# --------------------------------------------------------------------------- loaders

def test_loaders_repeatable_and_subset(embedded):
    def first_labels(seed):
        train, val, test = odata.make_loaders(embedded, batch_size=16, seed=seed, subset=64)
        assert (len(train.dataset), len(val.dataset), len(test.dataset)) == (64, 64, 64)
        return torch.cat([y for _, y in train])

    assert torch.equal(first_labels(0), first_labels(0))
    assert not torch.equal(first_labels(0), first_labels(1))


def test_loaders_val_test_in_order(embedded):
    loaders = odata.make_loaders(embedded, batch_size=100, seed=0)
    ys = torch.cat([y for _, y in loaders.test])
    assert torch.equal(ys, embedded.test.tensors[1])
    assert len(loaders.train.dataset) == 3500


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 8, "subset": 0},
                                    {"batch_size": 8, "subset": 2.5}])
def test_loaders_reject_bad_arguments(embedded, kwargs):
    with pytest.raises(ValueError):
        odata.make_loaders(embedded, seed=0, **kwargs)


def test_distributed_needs_process_group(embedded):
    with pytest.raises(RuntimeError, match="torchrun"):
        odata.make_loaders(embedded, batch_size=8, seed=0, distributed=True)


def test_distributed_sampler(embedded, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        train, _, _ = odata.make_loaders(embedded, batch_size=8, seed=0, subset=32, distributed=True)
        assert type(train.sampler).__name__ == "DistributedSampler"
        assert sum(len(y) for _, y in train) == 32
    finally:
        dist.destroy_process_group()


def test_rgb32_stand_in_has_cifar_shape_and_the_same_digits():
    from odezoo.experiments.data import get_datasets, load_embedded_mnist

    rgb = get_datasets("mnist-embedded-rgb32", seed=3)
    gray = load_embedded_mnist(seed=3)
    x, y = rgb.test[0]
    assert x.shape == (3, 32, 32)
    assert torch.equal(x[0, 2:30, 2:30], gray.test[0][0][0]) and torch.equal(x[0], x[2])
    assert int(y) == int(gray.test[0][1]) and len(rgb.train) == len(gray.train)


def test_synthetic_cifar10_has_the_real_shape_and_is_repeatable():
    splits = odata.get_datasets("synthetic-cifar10", seed=1)
    assert [len(s) for s in splits] == [40_000, 10_000, 10_000]
    x, y = splits.train[39_999]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert isinstance(y, int) and 0 <= y < 10
    again, _ = odata.get_datasets("synthetic-cifar10", seed=1).train[39_999]
    assert torch.equal(x, again)  # a pure function of (seed, index)
    assert not torch.equal(splits.train[0][0], splits.val[0][0])  # the splits differ
    assert not torch.equal(x, odata.get_datasets("synthetic-cifar10", seed=2).train[39_999][0])
    with pytest.raises(IndexError):
        splits.test[10_000]
    loaders = odata.make_loaders(splits, batch_size=256, seed=0, subset=512)
    xb, yb = next(iter(loaders.train))
    assert xb.shape == (256, 3, 32, 32) and yb.dtype == torch.int64
