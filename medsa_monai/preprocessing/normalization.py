"""The intensity normalisation a plan chooses, per channel, as a MONAI transform."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, NormalizeIntensity
from monai.utils import convert_to_dst_type

__all__ = ["PlannedNormalized"]


class PlannedNormalized(MapTransform):
    """Normalise each channel by the plan's scheme (see :func:`~medsa_monai.planning.make_plan`).

    - ``{"scheme": "ct", "clip": [low, high], "mean": m, "std": s}``: clip to the data set's foreground percentiles,
      then z-score with the data set's foreground statistics (the same mapping for every image, as HU are absolute);
    - ``{"scheme": "zscore", "nonzero": bool}``: z-score each image by its own statistics, on non-zero voxels only
      when the images are cropped or skull-stripped (zeros are outside the body there);
    - ``{"scheme": "range", "range": [low, high]}``: map ``[low, high]`` linearly to ``[0, 1]``, clipped (8-bit
      photographs: ``[0, 255]``; the network then maps ``[0, 1]`` to SAM's RGB statistics, ``intensity="unit"``).

    ``schemes`` ``None`` means per-volume z-score on non-zero voxels for every channel (the bundles' default).
    """

    def __init__(self, keys: KeysCollection = "image", schemes: Sequence[Mapping] | None = None) -> None:
        super().__init__(keys)
        self.schemes = list(schemes) if schemes is not None else None

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if self.schemes is None:
                d[key] = NormalizeIntensity(nonzero=True, channel_wise=True)(image)
                continue
            if len(self.schemes) != image.shape[0]:
                raise ValueError(f"the plan normalises {len(self.schemes)} channel(s), the image '{key}' has "
                                 f"{image.shape[0]}")
            out = torch.as_tensor(image).float().clone()
            for c, scheme in enumerate(self.schemes):
                if scheme["scheme"] == "ct":
                    low, high = scheme["clip"]
                    out[c] = (out[c].clamp(low, high) - scheme["mean"]) / max(scheme["std"], 1e-8)
                elif scheme["scheme"] == "zscore":
                    out[c] = NormalizeIntensity(nonzero=bool(scheme.get("nonzero", False)))(out[c])
                elif scheme["scheme"] == "range":
                    low, high = (float(v) for v in scheme["range"])
                    if not high > low:
                        raise ValueError(f"normalisation range {scheme['range']} of channel {c}: need low < high")
                    out[c] = ((out[c] - low) / (high - low)).clamp(0.0, 1.0)
                else:
                    raise ValueError(f"unknown normalisation scheme {scheme['scheme']!r}")
            d[key] = convert_to_dst_type(out, image)[0]  # keeps a MetaTensor's meta data
        return d
