"""Former home of the Ignite engines; they moved to the stage each belongs to (:mod:`medsa_monai.evaluation`,
:mod:`medsa_monai.training`, :mod:`medsa_monai.prediction`). The old names warn and forward."""

from .._deprecated import moved_names

__getattr__ = moved_names(__name__, {
    "InteractiveEvaluator": "medsa_monai.evaluation",
    "InteractiveReport": "medsa_monai.evaluation",
    "PromptedValidation": "medsa_monai.training",
    "TestTimeAdaptation": "medsa_monai.prediction",
    "calibrate_propagation": "medsa_monai.training",
    "calibrated_propagation_weight": "medsa_monai.predictor",
    "calibrated_removal_radius": "medsa_monai.predictor",
    "calibration_checkpoint": "medsa_monai.training",
    "prediction_entropy": "medsa_monai.prediction",
    "view_augmentation": "medsa_monai.prediction",
})
