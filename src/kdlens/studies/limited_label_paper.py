"""Scales of the limited-label study: today's ``cpu`` defaults and Lee & Wallraven's ``paper``.

``paper`` (Lee & Wallraven 2021, §3 and Table 1; the values the paper states):
CIFAR-100; student WRN-28-1; teacher the ImageNet ResNet-18 with an upsampling layer in
front (the 32×32 images are resized up for it), fine-tuned from ImageNet weights on each
budget's labels (the 1000-class head replaced); SGD lr 0.1, ×0.2 every 60 epochs, batch 64;
horizontal flips only; KD temperature T = 4; budgets 400 / 2,500 / 5,000 / 10,000 / 20,000
labels × 5 folds; the fold spread shown as max − min.

kdlens's choices where the paper gives no number: inputs upsampled to 224×224 (the size
torchvision's ImageNet weights were trained at), 200 epochs for every run (three ×0.2 decays
of the 60-epoch step schedule, WRN's CIFAR length: Zagoruyko & Komodakis 2016), momentum
0.9 and weight decay 5e-4 (kdlens's defaults).  Folds are independent balanced draws
(split seed = fold): 5 disjoint folds of 20,000 labels do not fit in CIFAR-100's 500
images per class.

Nothing is downloaded: the CIFAR-100 python files (``ROOT/cifar-100-python/{train,test,meta}``)
and a torchvision ``resnet18`` ImageNet state_dict must be on disk; by default they are
looked for where torchvision's own download code would have put them
(:func:`~kdlens.data.catalog.default_data_root` and ``torch.hub.get_dir()/checkpoints/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlens.data.catalog import default_data_root
from kdlens.errors import KdlensError

CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_FILES = ("train", "test", "meta")
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"

#: Lee & Wallraven's optimiser: SGD lr 0.1, ×0.2 every 60 epochs (momentum / decay: kdlens defaults)
PAPER_OPTIM = {"lr": 0.1, "schedule": "step", "gamma": 0.2, "step_size": 60, "momentum": 0.9, "weight_decay": 5e-4}
PAPER_EPOCHS = 200
PAPER_UPSAMPLE = 224

#: today's defaults of ``kdlens study limited-label`` (Fashion-MNIST sized for a CPU)
CPU_SCALE: dict[str, Any] = {"dataset": "fashion-mnist", "budgets": (100, 500, 1000, 5000), "folds": 3,
                             "teacher": "thesis_teacher_small", "student": "thesis_student", "student_epochs": 3}
PAPER_SCALE: dict[str, Any] = {
    "dataset": "cifar100", "budgets": (400, 2500, 5000, 10000, 20000), "folds": 5,
    "teacher": "resnet18", "student": "wrn_28_1", "student_epochs": PAPER_EPOCHS,
    "labeled_epochs_override": PAPER_EPOCHS, "temperature": 4.0, "fold_mode": "resample",
    "augmentation": {"crop_padding": 0, "hflip": True}, "spread": "range",
}
SCALES = {"cpu": CPU_SCALE, "paper": PAPER_SCALE}


def default_resnet18_weights() -> Path:
    """Where torchvision caches its ImageNet ResNet-18 (``ResNet18_Weights.IMAGENET1K_V1``)."""
    import torch.hub
    import torchvision.models as tvm

    url = tvm.ResNet18_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def check_paper_files(data_root: str | Path | None, teacher_weights: str | Path | None) -> tuple[Path, Path]:
    """``(root, weights)`` once both are on disk; otherwise a KdlensError (exit 2) naming each
    missing path and what to put there."""
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    weights = Path(teacher_weights).expanduser() if teacher_weights is not None else default_resnet18_weights()
    problems = []
    missing = [str(root / CIFAR100_FOLDER / f) for f in CIFAR100_FILES if not (root / CIFAR100_FOLDER / f).is_file()]
    if missing:
        problems.append(f"CIFAR-100 files missing: {', '.join(missing)}. Put the python version there: unpack "
                        f"{CIFAR100_URL} into {root} (it makes {CIFAR100_FOLDER}/ with train, test, meta), "
                        "or pass --data-root DIR where DIR/cifar-100-python/ holds them")
    if not weights.is_file():
        problems.append(f"ResNet-18 ImageNet weights missing: {weights}. Put a torchvision resnet18 state_dict "
                        "there (torchvision's ResNet18_Weights.IMAGENET1K_V1 file, resnet18-f37072fd.pth, "
                        "saved once online), or pass --teacher-weights FILE")
    if problems:
        raise KdlensError("the paper scale needs files that are not here:\n  - " + "\n  - ".join(problems))
    return root, weights


def scale_settings(scale: str, data_root: str | Path | None = None, teacher_weights: str | Path | None = None,
                   upsample: int | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`~kdlens.studies.limited_label.run_limited_label_study` for
    ``scale`` (``cpu`` | ``paper``); the paper scale checks its files first."""
    if scale not in SCALES:
        raise KdlensError(f"unknown scale {scale!r} of the limited-label study; use one of: {', '.join(SCALES)}")
    settings = dict(SCALES[scale])
    if scale == "cpu":
        if upsample is not None or teacher_weights is not None:
            raise KdlensError("--teacher-upsample and --teacher-weights belong to the paper scale (--scale paper); "
                              "at the cpu scale give the teacher's weights with --teacher-init")
        return settings | ({"data_root": str(data_root)} if data_root is not None else {})
    root, weights = check_paper_files(data_root, teacher_weights)
    return settings | {"data_root": str(root), "teacher_init": str(weights), "extra": {"optim": dict(PAPER_OPTIM)},
                       "teacher_kwargs": {"upsample_to": PAPER_UPSAMPLE if upsample is None else upsample}}
