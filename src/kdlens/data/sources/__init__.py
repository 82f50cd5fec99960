"""Dataset sources; importing this package registers them all in
:data:`kdlens.data.catalog.DATASETS`."""

from kdlens.data.sources import cifar, digits, mnist1d_generated, mnist_idx, synthetic

__all__ = ["cifar", "digits", "mnist1d_generated", "mnist_idx", "synthetic"]
