"""Pretraining: a foundation SAM fine-tuned on many data sets at once, class-agnostic, saved in
``segment_anything``'s own format, for the bundles to adapt with few parameters."""

from .corpus import CorpusSet, read_corpus
from .foundation import read_foundation_record, sam_state_dict, save_foundation
from .frames import Frames, load_frames
from .pretrain import PretrainSettings, pretrain
from .samples import CorpusSampler, SamInputd, corpus_entries, sam_frame
from .schedule import BudgetCosine
from .validation import CorpusValidation

__all__ = [
    "BudgetCosine",
    "CorpusSampler",
    "CorpusSet",
    "CorpusValidation",
    "Frames",
    "PretrainSettings",
    "SamInputd",
    "corpus_entries",
    "load_frames",
    "pretrain",
    "read_corpus",
    "read_foundation_record",
    "sam_frame",
    "sam_state_dict",
    "save_foundation",
]
