"""kdlens: train, distill and explain knowledge distillation.

The Python API (:mod:`kdlens.api`): ``kdlens.train``, ``kdlens.distill``, ``kdlens.load_run``
and, on any model and dataset, ``kdlens.find_hint_points``, ``kdlens.embed_points`` and
``kdlens.soft_label_entropy``.  They are imported on first use, so ``import kdlens`` stays light.
"""

__version__ = "0.1.0"

_API = ("train", "distill", "load_run", "find_hint_points", "embed_points", "soft_label_entropy",
        "RunResult", "LoadedRun")


def __getattr__(name: str):
    if name in _API:
        from kdlens import api

        return getattr(api, name)
    raise AttributeError(f"module 'kdlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
