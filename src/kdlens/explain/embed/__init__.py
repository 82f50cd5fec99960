"""Embedding-space explanation (Lee & Wallraven 2021)."""
from kdlens.explain.embed.ivis import Ivis
from kdlens.explain.embed.knn import nearest_neighbors
