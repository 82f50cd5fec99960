"""``kdlens profile``: parameters, FLOPs/MACs, latency, compression and speed-up (PURSUhInT Table 7)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from kdlens.cli.errors import user_errors_exit_2

DEFAULT_INPUT_SHAPE = (3, 32, 32)
DEFAULT_NUM_CLASSES = 10


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """``"3,32,32"`` → ``(3, 32, 32)``; anything else is a :class:`KdlensError`."""
    from kdlens.errors import KdlensError

    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise KdlensError(f"--input-shape {text!r}: write three positive integers C,H,W, e.g. 3,32,32 or 1,28,28")
    return shape  # type: ignore[return-value]


def resolve_profile_device(name: str):
    """``auto`` (cuda when available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``, checked."""
    import torch

    from kdlens.errors import KdlensError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KdlensError(f"--device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise KdlensError(f"--device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KdlensError(f"--device {name}: no CUDA device is available here; use --device cpu (or auto)")
    return device


def _fmt_latency(lat: dict) -> str:
    return f"{lat['median_ms']:.3f} ({lat['iqr_ms']:.3f})"


@user_errors_exit_2
def profile(
    model: str = typer.Option(..., "--model", help="student model reference: zoo name (`kdlens models`), "
                              "torchvision:NAME, timm:NAME or package.module:Class"),
    teacher_model: str = typer.Option(None, "--teacher-model", help="teacher model reference (same forms); "
                                      "adds compression and speed-up"),
    weights: str = typer.Option(None, "--weights", help="student weights file (state_dict or checkpoint); "
                                "default: random initialisation (cost does not depend on weights)"),
    teacher_weights: str = typer.Option(None, "--teacher-weights", help="teacher weights file"),
    dataset: str = typer.Option(None, "--dataset", help="take the input shape and class count from this "
                                "dataset's test split (e.g. digits, fashion-mnist)"),
    input_shape: str = typer.Option(None, "--input-shape", help="C,H,W of one image; default: the --dataset's, "
                                    "else 3,32,32"),
    num_classes: int = typer.Option(None, "--num-classes", help="classes of the output layer; default: the "
                                    "--dataset's, else 10"),
    batch_size: int = typer.Option(1, "--batch-size", help="images per timed forward pass (FLOPs are per batch)"),
    repeats: int = typer.Option(30, "--repeats", help="timed forward passes; the median and IQR are reported"),
    warmup: int = typer.Option(5, "--warmup", help="untimed forward passes before timing"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    json_path: str = typer.Option(None, "--json", help="also write the numbers as JSON to this file "
                                  "(nothing is written without it)"),
) -> None:
    """Parameters, FLOPs and MACs, latency, compression and speed-up (PURSUhInT Table 7).

    FLOPs are torch's FlopCounterMode count (a multiply-add = 2 FLOPs); MACs = FLOPs / 2, which papers often call "FLOPs".

    Latency is milliseconds per batch on --device, median (IQR) over --repeats passes in eval mode without autograd.

    Input shape and classes: the explicit options, else the --dataset's, else 3,32,32 and 10.
    """
    import torch

    from kdlens.errors import KdlensError
    from kdlens.models.profile import profile_models
    from kdlens.models.reference import build_model
    from kdlens.models.weights import load_weights

    # ---- check everything before any work
    if batch_size < 1:
        raise KdlensError(f"--batch-size must be ≥ 1; got {batch_size}")
    if repeats < 1 or warmup < 0:
        raise KdlensError(f"--repeats must be ≥ 1 and --warmup ≥ 0; got {repeats} and {warmup}")
    if num_classes is not None and num_classes < 1:
        raise KdlensError(f"--num-classes must be ≥ 1; got {num_classes}")
    dev = resolve_profile_device(device)
    shape = parse_input_shape(input_shape) if input_shape is not None else None
    if dataset is not None:
        from kdlens.data import load_dataset

        data = load_dataset(dataset, "test")
        shape = shape or data.image_shape
        num_classes = num_classes or data.num_classes
    shape = shape or DEFAULT_INPUT_SHAPE
    num_classes = num_classes or DEFAULT_NUM_CLASSES
    c, h, w = shape
    size = h if h == w else None

    def build(ref: str, path: str | None, what: str) -> torch.nn.Module:
        net = build_model(ref, num_classes=num_classes, in_channels=c, input_size=size)
        if path is not None:
            load_weights(net, path, what=what)
        return net.to(dev)

    student = build(model, weights, "student")
    teacher = build(teacher_model, teacher_weights, "teacher") if teacher_model else None

    example = torch.randn((batch_size, c, h, w), generator=torch.Generator().manual_seed(0))
    result = profile_models(student, teacher, example=example.to(dev), repeats=repeats, warmup=warmup,
                            student_name=model, teacher_name=teacher_model or "teacher")

    # ---- print
    lat = result.student.latency
    table = Table(title=f"input {batch_size}×{c}×{h}×{w}, {num_classes} classes, {lat['device']}, "
                  f"{lat['threads']} threads, {repeats} repeats")
    for header in ("role", "model", "params", "MFLOPs", "MMACs", "ms median (IQR)", "compress ×", "speed-up ×"):
        table.add_column(header, no_wrap=header != "model", justify="left" if header in ("role", "model") else "right")
    rows = [("student", result.student, result.compression, result.speed_up)]
    if result.teacher is not None:
        rows.append(("teacher", result.teacher, 1.0, 1.0))
    for role, p, comp, speed in rows:
        table.add_row(role, p.name, f"{p.params:,}", f"{p.flops / 1e6:,.2f}", f"{p.macs / 1e6:,.2f}",
                      _fmt_latency(p.latency), "" if comp is None else f"{comp:.2f}",
                      "" if speed is None else f"{speed:.2f}")
    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough for the whole table on one line per row
        console = Console(width=max(console.width, 120))
    console.print(table)
    if json_path is not None:
        from kdlens.store import atomic_write_text

        payload = {**result.to_dict(), "num_classes": num_classes, "device": str(dev)}
        atomic_write_text(json_path, json.dumps(payload, indent=2) + "\n")
        console.print(f"wrote {json_path}")
