"""medsa-monai: adapt a frozen Segment Anything Model to medical images with MONAI."""

__version__ = "0.1.0"
