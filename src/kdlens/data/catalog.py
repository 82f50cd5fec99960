"""The dataset registry: ``load_dataset("fashion-mnist", split="test")``.

Each source module (``kdlens.data.sources.*``) registers a :class:`DatasetSource`
with :func:`register_dataset`; :func:`load_dataset` looks it up by name (an unknown
name gets close matches, see :class:`kdlens.registry.Registry`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdlens.data.dataset import Dataset
from kdlens.errors import KdlensError
from kdlens.registry import Registry

SPLITS = ("train", "test")

#: Environment variable naming the default folder for downloaded / torchvision-layout data.
DATA_ROOT_ENV = "KDLENS_DATA_ROOT"

Loader = Callable[..., Dataset]


def default_data_root() -> Path:
    """Where data goes when ``root`` is not given: ``$KDLENS_DATA_ROOT`` or
    ``~/.cache/kdlens/datasets``.  Searched (after the system locations) when
    ``root=None``, and the download target for ``download=True`` without ``root``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kdlens" / "datasets"


@dataclass(frozen=True)
class DatasetSource:
    """How to load one named dataset.

    ``loader(split, root, download, **options) -> Dataset`` where ``root`` is a
    :class:`~pathlib.Path` or ``None``.  ``mean``/``std`` are per-channel
    normalisation constants in [0, 1] units, from the training split; ``None`` for
    sources that compute them from the generated data (``synthetic``).
    """

    name: str
    loader: Loader
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    description: str
    needs_files: bool = False

    def options(self) -> list[str]:
        """Extra keyword options the loader accepts (e.g. ``synthetic``'s ``n``)."""
        params = inspect.signature(self.loader).parameters
        return [p for p in params if p not in ("split", "root", "download")]


DATASETS: Registry[DatasetSource] = Registry("dataset")


def register_dataset(
    name: str,
    *,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    description: str,
    needs_files: bool = False,
) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader`` under ``name`` (see :class:`DatasetSource`)."""

    def decorate(loader: Loader) -> Loader:
        DATASETS.register(name)(
            DatasetSource(name, loader, mean, std, description, needs_files=needs_files)
        )
        return loader

    return decorate


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return DATASETS.names()


def dataset_source(name: str) -> DatasetSource:
    """The registered :class:`DatasetSource` for ``name`` (close matches if unknown)."""
    return DATASETS.get(name)


def dataset_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` in [0, 1] units from ``name``'s training split.

    For ``synthetic`` (computed per generated dataset) use ``Dataset.mean``/``.std``.
    """
    source = DATASETS.get(name)
    if source.mean is None or source.std is None:
        raise KdlensError(
            f"dataset {name!r} has no fixed normalisation constants; "
            "use load_dataset(...).mean and .std"
        )
    return source.mean, source.std


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    **options: object,
) -> Dataset:
    """Load split ``split`` (``"train"`` or ``"test"``) of dataset ``name`` into memory.

    ``root``: a folder in torchvision's layout (``root/FashionMNIST/raw``,
    ``root/cifar-10-batches-py``, …); ``None`` searches the system locations and
    :func:`default_data_root`.  ``download=True`` fetches missing files through
    torchvision (needs internet).  ``digits``, ``mnist1d`` and ``synthetic`` need no
    files and ignore ``root``/``download``.  ``options`` go to the source (only ``synthetic``
    takes any: ``n``, ``n_test``, ``num_classes``, ``channels``, ``size``, ``seed``, ``num_coarse``).

    Raises :class:`~kdlens.errors.DatasetNotFoundError` when files are missing (the
    message says how to get them) and :class:`~kdlens.errors.KdlensError` for a bad
    name, split or option.
    """
    source = DATASETS.get(name)
    if split not in SPLITS:
        raise KdlensError(f"unknown split {split!r} for dataset {name!r}; use one of: {', '.join(SPLITS)}")
    allowed = source.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise KdlensError(
            f"dataset {name!r} does not take option(s) {', '.join(unknown)}; "
            + (f"allowed: {', '.join(allowed)}" if allowed else "it takes none")
        )
    root_path = None if root is None else Path(root).expanduser()
    return source.loader(split=split, root=root_path, download=bool(download), **options)
