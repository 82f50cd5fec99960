"""Named feature taps: read intermediate features of any ``nn.Module`` with forward hooks.

Models stay plain (``forward`` returns logits). A zoo model declares

* ``hint_stages``: tuples of block module names (as in ``named_modules()``), one tuple per
  resolution stage, in forward order; ``hint_blocks`` is their concatenation. For ResNets
  these are the residual sub-blocks (PURSUhInT's candidate hint layers, Keser et al. 2022).
* in every block a submodule ``preact`` (``nn.Identity``) on the block's last tensor before
  its final ReLU: ``"<block>"`` taps the block output (post-activation), ``"<block>.preact"``
  the pre-activation. Where a block ends without a ReLU (WRN pre-activation blocks,
  MobileNetV2 linear bottlenecks) the two are the same tensor.
* a module ``penultimate`` whose output is the pooled feature vector fed to the classifier.

Aliases valid for every model: ``"penultimate"`` and ``"logits"`` (the model's output). Any
other module name from ``named_modules()`` may be tapped too. A model without
``hint_stages`` (any ``nn.Module``) falls back to its top-level children as blocks, and
``"penultimate"`` to the module named ``penultimate`` or else the input of its last
``nn.Linear``.

Captured tensors are clones taken inside the hook (so a later in-place op in a foreign
model cannot overwrite them) and keep the autograd graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from kdlens.errors import KdlensError, unknown_name

ALIASES = ("penultimate", "logits")
FORMS = ("post", "pre", "all")


def _blocks(model: nn.Module) -> tuple[str, ...]:
    blocks = getattr(model, "hint_blocks", None)
    if blocks is not None:
        return tuple(blocks)
    return tuple(name for name, _ in model.named_children())


def _penultimate(model: nn.Module) -> tuple[nn.Module, str] | None:
    """(module, "output" | "input") giving the penultimate features, or None."""
    modules = dict(model.named_modules())
    if "penultimate" in modules:
        return modules["penultimate"], "output"
    linears = [m for m in modules.values() if isinstance(m, nn.Linear)]
    return (linears[-1], "input") if linears else None


def list_taps(model: nn.Module, form: str = "post") -> list[str]:
    """Candidate tap names in forward order: block taps, then ``"penultimate"``, ``"logits"``.

    ``form`` is ``"post"`` (block outputs), ``"pre"`` (``<block>.preact``) or ``"all"``
    (for each block its pre- then its post-activation tap).
    """
    if form not in FORMS:
        raise unknown_name("tap form", form, FORMS)
    modules = dict(model.named_modules())
    taps: list[str] = []
    for block in _blocks(model):
        pre = f"{block}.preact"
        if form in ("pre", "all") and pre in modules:
            taps.append(pre)
        if form in ("post", "all"):
            taps.append(block)
    if _penultimate(model) is not None:
        taps.append("penultimate")
    return [*taps, "logits"]


def _resolve(model: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module, str]]:
    """``(name, module, "output" | "input")`` for every name; unknown names raise before any forward."""
    modules = dict(model.named_modules())
    resolved = []
    for name in names:
        if name == "logits":
            resolved.append((name, model, "output"))
        elif name == "penultimate" and (pen := _penultimate(model)) is not None:
            resolved.append((name, *pen))
        elif name in modules and name != "":
            resolved.append((name, modules[name], "output"))
        else:
            known = dict.fromkeys([*list_taps(model, "all"), *(m for m in modules if m)])
            raise unknown_name("layer", name, known)
    return resolved


class FeatureTaps:
    """Capture named features during ordinary forward calls; hooks live only inside ``with``.

    >>> with FeatureTaps(model, ["layer2.3", "penultimate"]) as taps:
    ...     logits = model(x)
    >>> feats = taps.features  # {"layer2.3": Tensor, "penultimate": Tensor}

    Features keep the autograd graph (use them in a hint loss). If a module runs several
    times in one forward, the last call wins.
    """

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        self.model = model
        self.names = list(names)
        self._resolved = _resolve(model, self.names)
        self._captured: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _store(self, name: str) -> Any:
        def on_output(module: nn.Module, args: Any, output: Any) -> None:
            self._captured[name] = output.clone() if isinstance(output, Tensor) else output

        def on_input(module: nn.Module, args: Any) -> None:
            self._captured[name] = args[0].clone()

        return on_output, on_input

    def __enter__(self) -> FeatureTaps:
        self._captured.clear()
        for name, module, where in self._resolved:
            on_output, on_input = self._store(name)
            if where == "output":
                self._handles.append(module.register_forward_hook(on_output))
            else:
                self._handles.append(module.register_forward_pre_hook(on_input))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def features(self) -> dict[str, Tensor]:
        """Captured features in the order the names were given."""
        missing = [n for n in self.names if n not in self._captured]
        if missing:
            raise KdlensError(f"layers {missing} were not reached by the forward pass (or no forward ran yet)")
        return {n: self._captured[n] for n in self.names}

    def __getitem__(self, name: str) -> Tensor:
        return self.features[name]


def extract_features(model: nn.Module, x: Tensor, names: Iterable[str]) -> dict[str, Tensor]:
    """Run ``model(x)`` once and return the named features, in ``names`` order.

    The model's mode (train/eval) and the grad mode are the caller's: wrap the call in
    ``torch.no_grad()`` and ``model.eval()`` for analysis.
    """
    with FeatureTaps(model, names) as taps:
        model(x)
    return taps.features


def _stages_by_resolution(model: nn.Module, example_input: Tensor) -> tuple[tuple[str, ...], ...]:
    """Group the fallback blocks of a foreign model by the spatial size of their outputs (dry run in eval mode).

    Global pooling layers are no stage of their own and are left out.
    """
    modules = dict(model.named_modules())
    global_pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    blocks = [b for b in _blocks(model) if not isinstance(modules[b], global_pools)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats = extract_features(model, example_input, blocks)
    finally:
        model.train(was_training)
    stages: list[list[str]] = []
    last_size = None
    for name in blocks:
        t = feats[name]
        if not isinstance(t, Tensor) or t.dim() != 4:
            continue
        if t.shape[-2:] != last_size:
            stages.append([])
            last_size = t.shape[-2:]
        stages[-1].append(name)
    return tuple(tuple(s) for s in stages)


def _stages(model: nn.Module, example_input: Tensor | None) -> tuple[tuple[str, ...], ...]:
    stages = getattr(model, "hint_stages", None)
    if stages is not None:
        return tuple(stages)
    if example_input is None:
        raise KdlensError(
            f"{type(model).__name__} is not a kdlens zoo model (no hint_stages): pass example_input= "
            "so that stages can be found by a dry run, or name the layers yourself"
        )
    return _stages_by_resolution(model, example_input)


def conventional_hint_layers(model: nn.Module, example_input: Tensor | None = None) -> list[str]:
    """The last block before each downsampling plus the last block of the last stage.

    This is the usual hint placement (FitNets/AT; PURSUhInT's "conventional" baseline): for
    resnet110 the blocks with 1-based indices 18, 36 and 54. Foreign models need an
    ``example_input`` for a dry run that finds where the spatial size changes.
    """
    return [stage[-1] for stage in _stages(model, example_input) if stage]


def extraction_points(model: nn.Module, example_input: Tensor | None = None) -> dict[str, str]:
    """Five extraction points A–E, early to late (Lee & Wallraven 2021, Fig. 1).

    A, B, C: the last block of each of the last three stages (CIFAR ResNets, WRNs,
    ShuffleNetV1 and the thesis CNNs have exactly three; ImageNet ResNet-18/34 use stages
    2, 3, 4; MobileNetV2 its last three resolutions); D: ``penultimate``; E: ``logits``.
    A model with fewer stages gets fewer points (``baseline_student``: only D and E).
    """
    lasts = [stage[-1] for stage in _stages(model, example_input) if stage][-3:]
    points = dict(zip("ABC"[3 - len(lasts) :], lasts, strict=True))
    if _penultimate(model) is not None:
        points["D"] = "penultimate"
    points["E"] = "logits"
    return points
