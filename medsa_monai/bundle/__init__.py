"""Bundle glue: functions that bundle configs call by ``$medsa_monai.bundle.<name>(...)``."""

from .workflow import TimeBudget, default_sam_checkpoint, latest_checkpoint, prepare_training, resolve_sam_checkpoint

__all__ = ["TimeBudget", "default_sam_checkpoint", "latest_checkpoint", "prepare_training", "resolve_sam_checkpoint"]
