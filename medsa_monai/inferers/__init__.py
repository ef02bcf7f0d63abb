"""Inferers beyond MONAI's: mirroring test-time augmentation."""

from .mirroring import MirroringInferer

__all__ = ["MirroringInferer"]
