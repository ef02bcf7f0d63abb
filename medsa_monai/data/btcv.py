"""BTCV's 13 abdominal organs, and label maps of other CT data sets mapped onto them.

BTCV ("Beyond the Cranial Vault", MICCAI 2015 multi-atlas abdomen challenge, Synapse syn3193805) labels 13 organs
with the values below (its ``label*.nii.gz``). TotalSegmentator (Wasserthal et al., Radiology AI 2023; its v2
``total`` task, 117 classes) labels the same organs with other values and names; :data:`TOTALSEGMENTATOR_TO_BTCV`
maps them (each BTCV organ has exactly one TotalSegmentator class; every other class becomes background). Note
that the definitions differ at the margins: TotalSegmentator's ``portal_vein_and_splenic_vein`` and BTCV's
"portal vein and splenic vein" agree, but its ``esophagus`` runs into the thorax where BTCV's scans stop.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BTCV_LABELS", "TOTALSEGMENTATOR_TO_BTCV", "totalsegmentator_to_btcv"]

BTCV_LABELS = {
    0: "background",
    1: "spleen",
    2: "right_kidney",
    3: "left_kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "portal_and_splenic_veins",
    11: "pancreas",
    12: "right_adrenal_gland",
    13: "left_adrenal_gland",
}

# TotalSegmentator v2 "total" value (name) -> BTCV value
TOTALSEGMENTATOR_TO_BTCV = {
    1: 1,  # spleen
    2: 2,  # kidney_right
    3: 3,  # kidney_left
    4: 4,  # gallbladder
    15: 5,  # esophagus
    5: 6,  # liver
    6: 7,  # stomach
    52: 8,  # aorta
    63: 9,  # inferior_vena_cava
    64: 10,  # portal_vein_and_splenic_vein
    7: 11,  # pancreas
    8: 12,  # adrenal_gland_right
    9: 13,  # adrenal_gland_left
}


def totalsegmentator_to_btcv(label: np.ndarray) -> np.ndarray:
    """A TotalSegmentator v2 ``total`` label map (values 0-117) as a BTCV one (0-13, uint8); other classes -> 0.

    Raises:
        ValueError: for values outside 0-117 (not a TotalSegmentator v2 ``total`` map).
    """
    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() > 117):
        raise ValueError(f"values {label.min()}..{label.max()} are not TotalSegmentator v2 'total' classes (0-117)")
    lookup = np.zeros(118, dtype=np.uint8)
    for source, target in TOTALSEGMENTATOR_TO_BTCV.items():
        lookup[source] = target
    return lookup[label.astype(np.int64)]
