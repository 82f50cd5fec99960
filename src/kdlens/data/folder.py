"""Image folders (the torchvision ``ImageFolder`` layout): scan, fingerprint, decode lazily.

Layout (``IMAGE_SUFFIXES``, case-insensitive; other files are ignored and counted)::

    DIR/train/<class>/<image>.jpg|.jpeg|.png
    DIR/val/<class>/<image>        (or DIR/test/<class>/<image>; val is used when both exist)

Classes are the sorted names of the folders in ``train/`` (label = position); the test
split's class folders must be a subset of them.  Images may sit in nested folders below
a class folder.  Names starting with ``.`` (``.DS_Store``, ``.ipynb_checkpoints``) are
skipped.

Decoding: ``torchvision.io.decode_image`` on the file's bytes, converted to the wanted
channels by the decoder (``ImageReadMode.GRAY``/``RGB``), with PIL as the fallback for
files torchvision cannot read.  Measured here on 64×64 images (one thread): JPEG 100 µs
with torchvision vs 240 µs with PIL (``Image.open(path).convert("RGB")`` → tensor), PNG
233 µs vs 370 µs; the RGB pixels are identical.  Grey conversion of colour images may
differ from PIL's by a few levels (libjpeg converts in YCbCr).  16-bit PNGs are scaled
to 8 bits (``round(v / 257)``).  torchvision 0.29 deprecated its image decoders (for
TorchCodec, not installed here) and warns with a ``DeprecationWarning`` on each call;
without them PIL decodes everything.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlens.data.dataset import Dataset
from kdlens.errors import KdlensError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TEST_SPLIT_NAMES = ("val", "test")  # in order of preference
BAD_IMAGE_POLICIES = ("error", "skip")
DECODERS = ("torchvision", "pil")
GREY_PIL_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

EXPECTED_LAYOUT = (
    "expected an image folder laid out as\n"
    "  DIR/train/<class>/<image>.jpg|.jpeg|.png\n"
    "  DIR/val/<class>/<image>   (or DIR/test/<class>/<image>)"
)


@dataclass(frozen=True)
class ImageFolderLayout:
    """What :func:`scan_image_folder` found: classes and ``(path, label)`` samples per split.

    ``ignored_files`` counts files without an image suffix (``ignored_examples`` names a few,
    relative to ``root``); :attr:`note` says so in words.
    """

    root: Path
    classes: list[str]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]
    test_name: str
    ignored_files: int = 0
    ignored_examples: tuple[str, ...] = field(default=())

    @property
    def note(self) -> str | None:
        """A sentence about ignored files, or ``None`` when there were none."""
        if not self.ignored_files:
            return None
        examples = ", ".join(self.ignored_examples)
        return (f"{self.root}: ignored {self.ignored_files} file(s) without an image suffix "
                f"({', '.join(IMAGE_SUFFIXES)}), e.g. {examples}")

    def split(self, name: str) -> list[tuple[Path, int]]:
        """The samples of ``"train"``, or of the test split (``"test"`` or ``"val"``)."""
        if name == "train":
            return self.train
        if name in TEST_SPLIT_NAMES:
            return self.test
        raise KdlensError(f"unknown split {name!r} of image folder {self.root}: use 'train' or {self.test_name!r}")


def _visible_dirs(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())


def _files_below(folder: Path) -> list[str]:
    """Relative POSIX paths of the visible files below ``folder`` (recursive, sorted)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, folder)
        for name in filenames:
            if not name.startswith("."):
                found.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return sorted(found)


def _scan_split(root: Path, split: str, classes: list[str] | None, ignored: list[str]):
    """(classes, samples) of ``root/split``; ``classes`` given: labels from it (subset check)."""
    folder = root / split
    class_dirs = _visible_dirs(folder)
    if not class_dirs:
        loose = [n for n in _files_below(folder) if n.lower().endswith(IMAGE_SUFFIXES)]
        what = f"{len(loose)} image(s) directly in it" if loose else "nothing in it"
        raise KdlensError(
            f"{folder} has no class sub-folders ({what}); {EXPECTED_LAYOUT}\n"
            "Put each class's images in a folder named after the class."
        )
    if classes is None:
        classes = class_dirs
    else:
        extra = sorted(set(class_dirs) - set(classes))
        if extra:
            raise KdlensError(
                f"{folder} has class folder(s) that {root / 'train'} lacks: {', '.join(extra)}; "
                f"the {split} classes must be a subset of the training classes ({', '.join(classes)})"
            )
    label_of = {c: i for i, c in enumerate(classes)}
    with os.scandir(folder) as it:
        loose_files = sorted(e.name for e in it if not e.name.startswith(".") and e.is_file())
    ignored.extend(f"{split}/{n}" for n in loose_files)
    samples: list[tuple[Path, int]] = []
    for name in class_dirs:
        files = _files_below(folder / name)
        images = [f for f in files if f.lower().endswith(IMAGE_SUFFIXES)]
        ignored.extend(f"{split}/{name}/{f}" for f in files if not f.lower().endswith(IMAGE_SUFFIXES))
        if not images:
            others = f" ({len(files)} other file(s), e.g. {files[0]})" if files else ""
            raise KdlensError(
                f"class folder {folder / name} has no images{others}; image files end in "
                f"{', '.join(IMAGE_SUFFIXES)} (any case). Add images or remove the folder. {EXPECTED_LAYOUT}"
            )
        label = label_of[name]
        samples.extend((folder / name / f, label) for f in images)
    return classes, samples


def scan_image_folder(root: str | os.PathLike[str]) -> ImageFolderLayout:
    """Scan ``root`` (``train/`` plus ``val/`` or ``test/``, see the module doc) into an
    :class:`ImageFolderLayout`, sorted and deterministic; :class:`KdlensError` naming the
    path and the expected layout when the folder does not fit."""
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise KdlensError(f"image folder {root} {what}; {EXPECTED_LAYOUT}")
    if not (root / "train").is_dir():
        found = ", ".join(_visible_dirs(root)[:10]) or "no sub-folders"
        raise KdlensError(f"image folder {root} has no train/ folder (found: {found}); {EXPECTED_LAYOUT}")
    test_name = next((n for n in TEST_SPLIT_NAMES if (root / n).is_dir()), None)
    if test_name is None:
        raise KdlensError(
            f"image folder {root} has no val/ or test/ folder for evaluation; {EXPECTED_LAYOUT}"
        )
    ignored: list[str] = []
    classes, train = _scan_split(root, "train", None, ignored)
    _, test = _scan_split(root, test_name, classes, ignored)
    return ImageFolderLayout(root, classes, train, test, test_name, len(ignored), tuple(ignored[:3]))


def folder_fingerprint(layout: ImageFolderLayout) -> str:
    """SHA-256 (hex) over ``relative path, size, mtime_ns`` of every image of both splits,
    plus the class names and the test split's name.  A touched, renamed, added or removed
    image changes it; ignored (non-image) files do not."""
    h = hashlib.sha256()
    h.update(("\0".join(layout.classes) + f"\0{layout.test_name}\n").encode())
    for samples in (layout.train, layout.test):
        for path, label in samples:
            st = os.stat(path)
            rel = os.path.relpath(path, layout.root).replace(os.sep, "/")
            h.update(f"{rel}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class BadImageError(KdlensError):
    """An image file that neither torchvision nor PIL can decode."""


def _read_bytes(path: str) -> bytearray:
    with open(path, "rb") as f:
        return bytearray(f.read())


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x
    if x.dtype == torch.uint16:  # 16-bit PNG
        return ((x.to(torch.int32) + 128) // 257).to(torch.uint8)
    raise BadImageError(f"unsupported pixel type {x.dtype}")


def _decode_pil(data: bytes | bytearray, channels: int) -> torch.Tensor:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            arr = np.asarray(im, dtype=np.float64)  # scale 16-bit to 8-bit like the torchvision path
            im = Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8))
        arr = np.array(im.convert("L" if channels == 1 else "RGB"))
    t = torch.from_numpy(arr)
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


@functools.cache
def _torchvision_decoder() -> tuple[Any, Any, Any] | None:
    """``(decode_image, GRAY, RGB)`` from ``torchvision.io``, or ``None`` where it is gone
    (deprecated since torchvision 0.29 in favour of TorchCodec): PIL then decodes."""
    try:
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        return None
    return decode_image, ImageReadMode.GRAY, ImageReadMode.RGB


#: torchvision 0.29 deprecates its image decoders (for TorchCodec) and warns on every call;
#: they are still the fastest here (benchmarks/folder_stream.py), so the warning is silenced
#: once, by its message, rather than flooding every epoch's log.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def _decode_torchvision(data: bytearray, channels: int) -> torch.Tensor:
    found = _torchvision_decoder()
    if found is None:
        raise BadImageError("torchvision.io.decode_image is not available")
    decode, grey, rgb = found
    return _to_uint8(decode(torch.frombuffer(data, dtype=torch.uint8), mode=grey if channels == 1 else rgb))


def decode_image_file(path: str | os.PathLike[str], channels: int, decoder: str = "torchvision") -> torch.Tensor:
    """The image at ``path`` as a ``uint8`` ``channels×H×W`` tensor (1: grey, 3: RGB; alpha
    dropped).  ``decoder="torchvision"`` falls back to PIL for files it cannot read;
    :class:`BadImageError` when neither can (truncated, corrupt, not an image)."""
    try:
        data = _read_bytes(os.fspath(path))
    except OSError as e:
        raise BadImageError(f"cannot read {path}: {e.strerror or e}") from None
    if decoder == "torchvision" and data:
        try:
            return _decode_torchvision(data, channels)
        except (RuntimeError, ValueError, BadImageError):
            pass  # PIL below decides (and names the problem)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _decode_pil(data, channels)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError…
        raise BadImageError(f"cannot decode {path}: {type(e).__name__}: {e}") from None


def resize_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 ``C×H×W`` image to ``size = (h, w)``
    (``torchvision.transforms.v2.functional.resize``, uint8 in and out)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(x, list(size), antialias=True)


def _check_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    ok = (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size))
    if not ok:
        raise KdlensError(f"image size must be a positive integer or (height, width), got {size!r}")
    return (int(size[0]), int(size[1]))


def infer_channels_and_size(samples: list[tuple[Path, int]]) -> tuple[int, tuple[int, int]]:
    """``(channels, (h, w))`` of the first image PIL can decode: 1 for grey modes (``L``,
    ``LA``, ``1``, ``I;16``, …), else 3."""
    from PIL import Image

    for path, _ in samples:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as im:
                    im.load()
                    return (1 if im.mode in GREY_PIL_MODES else 3), (im.height, im.width)
        except Exception:  # noqa: S112  (an undecodable file: try the next one)
            continue
    raise KdlensError(f"none of the {len(samples)} image file(s) could be decoded"
                      + (f" (first: {samples[0][0]})" if samples else ""))


class ImageFolderDataset(torch.utils.data.Dataset):
    """Lazily decoded ``(uint8 C×H×W image, label)`` items of an image list (e.g.
    ``layout.train``).

    Args:
        samples: ``(path, label)`` pairs.
        classes: class names, index = label.
        channels: 1 (grey) or 3 (RGB); every image is converted to it.  ``None``: from the
            first image (:func:`infer_channels_and_size`).
        size: ``(h, w)`` (or one int) to resize every image to (antialiased bilinear);
            ``None``: every image must have the first image's size.
        on_bad_image: ``"error"`` (a :class:`KdlensError` naming the file) or ``"skip"``
            (the item is ``None``; :class:`~kdlens.data.streamed.LoaderBatches` drops and
            counts it).
        decoder: ``"torchvision"`` (fastest here, PIL fallback) or ``"pil"``.
    """

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        classes: list[str],
        *,
        channels: int | None,
        size: tuple[int, int] | int | None,
        on_bad_image: str = "error",
        decoder: str = "torchvision",
    ) -> None:
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise KdlensError(f"on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {on_bad_image!r}")
        if decoder not in DECODERS:
            raise KdlensError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        if channels is not None and channels not in (1, 3):
            raise KdlensError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        size = _check_size(size)
        if not samples:
            raise KdlensError("an image folder dataset needs at least one image, got an empty sample list")
        # paths as one UTF-8 blob + end offsets: no per-path Python objects for the workers
        # to copy on write (100,000 paths: ~6 MB instead of ~15 MB of str objects)
        encoded = [os.fsencode(p) for p, _ in samples]
        self._path_blob = b"".join(encoded)
        self._path_ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        self._label_list = [int(label) for _, label in samples]
        self._labels = torch.tensor(self._label_list, dtype=torch.int64)
        self.classes = list(classes)
        if int(self._labels.min()) < 0 or int(self._labels.max()) >= len(self.classes):
            raise KdlensError(f"labels must lie in 0..{len(self.classes) - 1} for {len(self.classes)} classes")
        if channels is None or size is None:
            first_channels, first_size = infer_channels_and_size(samples)
            channels = first_channels if channels is None else channels
            size_given = size is not None
            size = size if size is not None else first_size
        else:
            size_given = True
        self.channels = int(channels)
        self.size = size
        self.resize = size_given
        self.on_bad_image = on_bad_image
        self.decoder = decoder
        if decoder == "torchvision":
            # import torchvision here, once, so DataLoader workers forked later share it
            # (measured: importing it in each worker added ~90 MB of private memory per worker)
            _torchvision_decoder()

    def __len__(self) -> int:
        return len(self._label_list)

    def path(self, i: int) -> str:
        """The file of item ``i``."""
        i = range(len(self))[i]
        start = int(self._path_ends[i - 1]) if i else 0
        return os.fsdecode(self._path_blob[start:int(self._path_ends[i])])

    @property
    def labels(self) -> torch.Tensor:
        """int64 labels of all items (no decoding)."""
        return self._labels

    @property
    def paths(self) -> list[str]:
        """Every item's file (built on request)."""
        return [self.path(i) for i in range(len(self))]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every item."""
        return (self.channels, self.size[0], self.size[1])

    def __repr__(self) -> str:
        return (f"ImageFolderDataset(n={len(self)}, image_shape={self.image_shape}, "
                f"num_classes={self.num_classes}, on_bad_image={self.on_bad_image!r})")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        path = self.path(i)
        try:
            x = decode_image_file(path, self.channels, self.decoder)
        except BadImageError as e:
            if self.on_bad_image == "skip":
                return None
            raise KdlensError(f"{e}. To leave unreadable images out, set data.on_bad_image=skip") from None
        if self.resize:
            x = resize_image(x, self.size)
        elif tuple(x.shape[1:]) != self.size:
            h, w = x.shape[1:]
            raise KdlensError(
                f"{path} is {h}×{w} (height×width) but the first image, {self.path(0)}, is "
                f"{self.size[0]}×{self.size[1]}; to use images of different sizes resize them all to one "
                "size: set data.image_size=N (N×N) or data.image_size=[H, W]"
            )
        return x, self._label_list[i]


def estimate_mean_std(
    dataset: Any, n: int = 2000, seed: int = 0, num_workers: int = 0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units over a random sample of ``n`` items.

    Approximation: pooled over all pixels of ``min(n, len)`` items drawn without replacement
    (``torch.randperm`` seeded with ``seed``) instead of the whole set — ``std =
    sqrt(E[x²] − E[x]²)`` with sums in float64.  With 2,000 images the constants are close
    enough for input normalisation (their only use).  uint8 items are divided by 255;
    floating items are taken as already in [0, 1].  Skipped (``None``) items are left out.
    """
    from kdlens.data.streamed import LoaderBatches

    total = len(dataset)
    if total == 0:
        raise KdlensError("cannot estimate mean/std of an empty dataset")
    pick = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: max(1, min(n, total))]
    s = s2 = None
    count = 0
    with LoaderBatches(dataset, 256, shuffle=False, indices=pick.sort().values, num_workers=num_workers) as batches:
        for x, _, _ in batches:
            xf = x.to(torch.float64)
            if x.dtype == torch.uint8:
                xf /= 255.0
            dims = [d for d in range(xf.ndim) if d != 1]
            bs, bs2 = xf.sum(dims), (xf * xf).sum(dims)
            s, s2 = (bs, bs2) if s is None else (s + bs, s2 + bs2)
            count += xf.numel() // xf.shape[1]
    if s is None:
        raise KdlensError(f"none of the {len(pick)} sampled items could be read")
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def load_image_folder_in_memory(
    layout: ImageFolderLayout,
    split: str,
    channels: int | None = None,
    size: tuple[int, int] | int | None = None,
    on_bad_image: str = "error",
    *,
    num_workers: int = 0,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Dataset:
    """Decode a whole split into one in-memory :class:`~kdlens.data.dataset.Dataset` named
    ``folder:{root}`` (for folders that fit in memory: N·C·H·W bytes).

    ``split``: ``"train"`` or the test split (``"test"``/``"val"``).  Skipped bad images are
    left out.  ``mean``/``std``: given, or for the training split computed exactly from all
    its pixels (pass the training split's constants when loading the test split).
    """
    from kdlens.data.streamed import LoaderBatches

    samples = layout.split(split)
    ds = ImageFolderDataset(samples, layout.classes, channels=channels, size=size, on_bad_image=on_bad_image)
    images = torch.empty((len(ds), *ds.image_shape), dtype=torch.uint8)
    kept = torch.zeros(len(ds), dtype=torch.bool)
    with LoaderBatches(ds, 256, shuffle=False, num_workers=num_workers) as batches:
        for x, _, idx in batches:
            images[idx] = x
            kept[idx] = True
    labels = ds.labels
    if not bool(kept.all()):
        images, labels = images[kept], labels[kept]
    is_train = split == "train"
    if is_train and mean is None and std is None and len(images):
        c = images.shape[1]
        s = torch.zeros(c, dtype=torch.float64)
        s2 = torch.zeros(c, dtype=torch.float64)
        for chunk in images.split(1024):
            xf = chunk.to(torch.float64) / 255.0
            s += xf.sum((0, 2, 3))
            s2 += (xf * xf).sum((0, 2, 3))
        count = images.shape[0] * images.shape[2] * images.shape[3]
        m = s / count
        mean = tuple(float(v) for v in m)
        std = tuple(float(v) for v in (s2 / count - m * m).clamp_min(0).sqrt())
    return Dataset(
        name=f"folder:{layout.root}", images=images, labels=labels, classes=list(layout.classes),
        mean=mean, std=std, split="train" if is_train else "test",
    )
