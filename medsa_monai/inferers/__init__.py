"""Inferers beyond MONAI's: mirroring test-time augmentation, the embedding cache, interactive training sessions."""

from .embedding_cache import EmbeddingCache
from .interactive_training import InteractiveTrainingInferer
from .mirroring import MirroringInferer

__all__ = ["EmbeddingCache", "InteractiveTrainingInferer", "MirroringInferer"]
