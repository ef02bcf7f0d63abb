"""A cache of image embeddings for a frozen SAM image encoder, so that training and test-time adaptation run only the
mask decoder after the first pass over an image."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..data.atomic import atomic_path

__all__ = ["EmbeddingCache"]

logger = logging.getLogger(__name__)


def _digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
    return h.hexdigest()


class EmbeddingCache:
    """Image embeddings keyed by the content of the image and of the encoder's weights.

    Each image (each row of a batch: an image or a slice) is hashed with its shape and dtype; the encoder's weights
    are hashed once and again only when a weight tensor changes (PyTorch counts every in-place change in its
    ``_version``), so a changed image, an optimizer step or a loaded checkpoint never returns a stale embedding.
    Embeddings are kept in memory, least recently used dropped first beyond ``max_bytes``, and, with ``directory``,
    on disk (``torch.save``, read with ``weights_only=True``) up to ``max_disk_bytes``.

    Args:
        max_bytes: memory budget of the in-memory cache.
        directory: folder for the on-disk cache, shared between runs; ``None`` for memory only.
        max_disk_bytes: size limit of the on-disk cache; ``None`` for no limit.
    """

    def __init__(self, max_bytes: int = 2 * 1024**3, directory: str | Path | None = None,
                 max_disk_bytes: int | None = None) -> None:
        self.max_bytes = int(max_bytes)
        self.directory = Path(directory) if directory is not None else None
        self.max_disk_bytes = max_disk_bytes
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._weights: dict[int, tuple[tuple[int, ...], str]] = {}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._memory)

    def clear(self) -> None:
        self._memory.clear()
        self._bytes = 0

    def weights_key(self, module: nn.Module) -> str:
        """A hash of ``module``'s parameters and buffers, recomputed only when one of them has changed."""
        tensors = list(module.state_dict().values())
        versions = tuple(t._version for t in tensors) + tuple(t.data_ptr() for t in tensors)
        cached = self._weights.get(id(module))
        if cached is None or cached[0] != versions:
            digest = _digest(*(t.detach().cpu().contiguous().numpy().tobytes() for t in tensors))
            cached = (versions, digest)
            self._weights[id(module)] = cached
        return cached[1]

    @staticmethod
    def image_key(image: torch.Tensor) -> str:
        array = image.detach().cpu().contiguous()
        return _digest(str(tuple(array.shape)).encode(), str(array.dtype).encode(), array.numpy().tobytes())

    def embed(self, images: torch.Tensor, encoder: nn.Module, compute: Callable[[torch.Tensor], torch.Tensor]
              ) -> torch.Tensor:
        """Embeddings of ``images`` (``(N, ...)``, one row per image), computing (without gradients) only the rows
        not cached. ``compute`` maps a batch of rows to their embeddings; ``encoder`` is what they depend on."""
        weights = self.weights_key(encoder)
        keys = [f"{weights}-{self.image_key(row)}" for row in images]
        found = [self._get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            with torch.no_grad():
                computed = compute(images[missing])
            for i, embedding in zip(missing, computed, strict=True):
                found[i] = embedding
                self._put(keys[i], embedding)
        return torch.stack([f.to(images.device) for f in found])

    def _get(self, key: str) -> torch.Tensor | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.directory is not None:
            path = self.directory / f"{key}.pt"
            if path.is_file():
                path.touch()
                tensor = torch.load(path, map_location="cpu", weights_only=True)
                self._remember(key, tensor)
                return tensor
        return None

    def _put(self, key: str, embedding: torch.Tensor) -> None:
        tensor = embedding.detach().cpu().clone()
        self._remember(key, tensor)
        if self.directory is not None:
            with atomic_path(self.directory / f"{key}.pt") as tmp:
                torch.save(tensor, tmp)
            self._trim_disk()

    def _remember(self, key: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if size > self.max_bytes:
            return
        self._memory[key] = tensor
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, dropped = self._memory.popitem(last=False)
            self._bytes -= dropped.numel() * dropped.element_size()

    def _trim_disk(self) -> None:
        if self.max_disk_bytes is None:
            return
        files = sorted(self.directory.glob("*.pt"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if total <= self.max_disk_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
