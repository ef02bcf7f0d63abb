"""Inferers beyond MONAI's: mirroring test-time augmentation."""

from .embedding_cache import EmbeddingCache
from .mirroring import MirroringInferer

__all__ = ["EmbeddingCache", "MirroringInferer"]
