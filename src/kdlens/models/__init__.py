"""Model zoo: a registry of plain ``nn.Module`` s plus named feature taps.

``create_model("resnet20", num_classes=100)`` builds a model; ``list_taps(model)`` names
its candidate hint layers; ``extract_features`` / ``FeatureTaps`` read them with forward
hooks, so ``forward`` always returns logits only.
"""

from kdlens.models import (  # noqa: F401  (importing registers the models)
    mobilenet,
    resnet_cifar,
    resnet_imagenet,
    shufflenet,
    thesis_cnn,
    vats_thesis,
    wrn,
)
from kdlens.models.registry import count_parameters, create_model, list_models, register_model
from kdlens.models.taps import (
    FeatureTaps,
    conventional_hint_layers,
    extract_features,
    extraction_points,
    list_taps,
)

__all__ = [
    "FeatureTaps",
    "conventional_hint_layers",
    "count_parameters",
    "create_model",
    "extract_features",
    "extraction_points",
    "list_models",
    "list_taps",
    "register_model",
]
