"""Former home of the inferers and the embedding cache; they moved to :mod:`medsa_monai.predictor` and interactive
training to :mod:`medsa_monai.training`. The old names warn and forward."""

from .._deprecated import moved_names

__getattr__ = moved_names(__name__, {
    "ClickAwareInferer": "medsa_monai.predictor",
    "EmbeddingCache": "medsa_monai.predictor",
    "MirroringInferer": "medsa_monai.predictor",
}, removed={
    "InteractiveTrainingInferer": "interactive training runs in the trainer's iteration: use "
                                  "medsa_monai.training.InteractiveTrainer with "
                                  "medsa_monai.training.InteractiveSessions (`medsa bundle sync <bundle>` rewrites "
                                  "a bundle's configs)",
    "InteractiveTrainingLoss": "the automatic-mode loss is added by medsa_monai.training.InteractiveTrainer "
                               "(automatic_loss_weight)",
})
