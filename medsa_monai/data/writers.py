"""Image writers that never leave a partial file: write to a temporary name, then rename."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from monai.data import NibabelWriter

__all__ = ["AtomicNibabelWriter"]

logger = logging.getLogger(__name__)


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` whose output appears whole or not at all (for ``SaveImaged(writer=...)``)."""

    def write(self, filename, verbose: bool = False, **obj_kwargs) -> None:
        target = Path(filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(target.suffixes) or ".nii.gz"  # nibabel picks the format from the extension
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
        os.close(fd)
        try:
            super().write(tmp, verbose=False, **obj_kwargs)
            os.replace(tmp, target)
            if verbose:
                logger.info("wrote %s", target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
