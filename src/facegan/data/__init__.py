"""Face data: sources -> a prepared uint8 cache (prepare.py) -> batches (batches.py) or a Dataset."""

from .dataset import FaceDataset

__all__ = ["FaceDataset"]
