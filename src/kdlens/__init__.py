"""kdlens: train, distill and explain knowledge distillation.

The Python API (:mod:`kdlens.api`): ``kdlens.train``, ``kdlens.distill``, ``kdlens.load_run``
and, on any model and dataset, ``kdlens.find_hint_points``, ``kdlens.embed_points`` and
``kdlens.soft_label_entropy``.  They are imported on first use, so ``import kdlens`` stays light.

``kdlens.train`` and ``kdlens.distill`` are also the packages of the train and distill layers
(``kdlens.train.Trainer``, ``kdlens.distill.build_objective``): calling the package calls the
API function of the same name (:class:`CallableLayer`).
"""

import sys
import types

__version__ = "0.1.0"

_API = ("load_run", "find_hint_points", "embed_points", "soft_label_entropy", "RunResult", "LoadedRun")
_CALLABLE_LAYERS = ("train", "distill")


class CallableLayer(types.ModuleType):
    """A layer package that, called, runs the API function of its name: ``kdlens.train(model, data)``
    is :func:`kdlens.api.train`, while ``kdlens.train.Trainer`` stays the engine."""

    def __call__(self, *args, **kwargs):
        from kdlens import api

        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


def make_callable(module_name: str) -> None:
    """Called by ``kdlens/train/__init__.py`` and ``kdlens/distill/__init__.py`` on import."""
    sys.modules[module_name].__class__ = CallableLayer


def __getattr__(name: str):
    if name in _CALLABLE_LAYERS:
        import importlib

        return importlib.import_module(f"kdlens.{name}")
    if name in _API:
        from kdlens import api

        return getattr(api, name)
    raise AttributeError(f"module 'kdlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, *_CALLABLE_LAYERS])
