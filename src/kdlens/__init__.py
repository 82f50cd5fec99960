"""kdlens: train, distill and explain knowledge distillation."""

__version__ = "0.1.0"
