"""Inferers beyond MONAI's: mirroring test-time augmentation, the embedding cache, interactive training sessions."""

from .click_aware import ClickAwareInferer
from .embedding_cache import EmbeddingCache
from .interactive_training import InteractiveTrainingInferer, InteractiveTrainingLoss
from .mirroring import MirroringInferer

__all__ = ["ClickAwareInferer", "EmbeddingCache", "InteractiveTrainingInferer", "InteractiveTrainingLoss",
           "MirroringInferer"]
