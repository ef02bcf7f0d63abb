"""Names that moved in the redesign still work from their former home, with a warning that says where they went;
names that were replaced say what replaced them."""

from __future__ import annotations

import importlib

import pytest

MOVED = [
    ("medsa_monai.inferers", "EmbeddingCache", "medsa_monai.predictor"),
    ("medsa_monai.inferers", "ClickAwareInferer", "medsa_monai.predictor"),
    ("medsa_monai.inferers", "MirroringInferer", "medsa_monai.predictor"),
    ("medsa_monai.engines", "InteractiveEvaluator", "medsa_monai.evaluation"),
    ("medsa_monai.engines", "PromptedValidation", "medsa_monai.training"),
    ("medsa_monai.engines", "TestTimeAdaptation", "medsa_monai.prediction"),
    ("medsa_monai.engines", "calibrated_propagation_weight", "medsa_monai.predictor"),
    ("medsa_monai.bundle", "loading_transforms", "medsa_monai.preprocessing"),
    ("medsa_monai.bundle", "planned_inferer", "medsa_monai.predictor"),
    ("medsa_monai.bundle", "prepare_training", "medsa_monai.training"),
    ("medsa_monai.bundle", "label_map_transforms", "medsa_monai.prediction"),
    ("medsa_monai.networks", "propagate_prompts", "medsa_monai.predictor"),
    ("medsa_monai.planning", "ingest", "medsa_monai.conversion"),
    ("medsa_monai.planning", "make_dataset", "medsa_monai.preprocessing"),
    ("medsa_monai.prompts", "AddClickGuidanced", "medsa_monai.predictor"),
    ("medsa_monai.prompts", "simulate_clicks", "medsa_monai.evaluation"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_a_moved_name_warns_and_is_the_new_one(old, name, new):
    with pytest.warns(FutureWarning, match=f"{old}.{name} moved to {new}.{name}"):
        found = getattr(importlib.import_module(old), name)
    assert found is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize(("old", "name", "instead"), [
    ("medsa_monai.inferers", "InteractiveTrainingInferer", "InteractiveTrainer"),
    ("medsa_monai.inferers", "InteractiveTrainingLoss", "automatic_loss_weight"),
    ("medsa_monai.prompts", "next_click", "error_click"),
    ("medsa_monai.prompts", "sample_error_click", "error_click"),
    ("medsa_monai.bundle", "bundle_plan", "Plan.for_bundle"),
])
def test_a_replaced_name_says_what_replaced_it(old, name, instead):
    with pytest.raises(AttributeError, match=instead):
        getattr(importlib.import_module(old), name)


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        _ = importlib.import_module("medsa_monai.networks").nothing_here
