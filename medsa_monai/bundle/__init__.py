"""Bundle glue: functions that bundle configs call by ``$medsa_monai.bundle.<name>(...)``."""

from .workflow import TimeBudget, latest_checkpoint, prepare_training, resolve_sam_checkpoint

__all__ = ["TimeBudget", "latest_checkpoint", "prepare_training", "resolve_sam_checkpoint"]
