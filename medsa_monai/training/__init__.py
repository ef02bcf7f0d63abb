"""Training: the trainer whose iteration runs simulated interactive sessions, model selection on prompted Dice,
the predictor's calibration after training, resumable checkpoints, time budgets and distributed runs."""

from .calibration import CANDIDATE_REMOVAL_RADII, CANDIDATE_WEIGHTS, calibrate_propagation, calibration_checkpoint
from .checkpoints import default_sam_checkpoint, latest_checkpoint, resolve_sam_checkpoint
from .distributed import RankRecorder, state_dict_sha256
from .prompted_validation import PromptedValidation
from .sessions import InteractiveSessions, Session, winner_masks
from .trainer import InteractiveTrainer, SessionStep
from .workflow import TimeBudget, prepare_training

__all__ = [
    "CANDIDATE_REMOVAL_RADII",
    "CANDIDATE_WEIGHTS",
    "InteractiveSessions",
    "InteractiveTrainer",
    "PromptedValidation",
    "RankRecorder",
    "Session",
    "SessionStep",
    "TimeBudget",
    "calibrate_propagation",
    "calibration_checkpoint",
    "default_sam_checkpoint",
    "latest_checkpoint",
    "prepare_training",
    "resolve_sam_checkpoint",
    "state_dict_sha256",
    "winner_masks",
]
