"""The embedding cache: identical embeddings, reuse, invalidation on image or weight change, memory and disk limits."""

from __future__ import annotations

import torch

from medsa_monai.networks import MedSA
from medsa_monai.predictor import EmbeddingCache, MedSAPredictor

from .conftest import randomise


def _net(trainable="samda", **kwargs) -> MedSA:
    torch.manual_seed(0)
    return randomise(MedSA(2, 3, 2, "vit_tiny", image_size=64, trainable=trainable, **kwargs)).eval()


@torch.no_grad()
def test_cached_embeddings_are_identical_and_reused():
    net = _net()
    images = torch.rand(3, 3, 40, 50)
    direct = net.encode(images)
    cached = MedSAPredictor(net, embedding_cache=EmbeddingCache())
    first = cached.encode(images)
    again = cached.encode(images[[2, 0]])  # other batches of the same images hit row by row
    assert torch.equal(first, direct) and torch.equal(again, direct[[2, 0]])
    assert (cached.embedding_cache.misses, cached.embedding_cache.hits) == (3, 2)
    assert torch.equal(cached(images), net.postprocess(net.decode(direct, images.shape), (40, 50)))


@torch.no_grad()
def test_cache_is_invalidated_by_image_or_weight_changes():
    net = _net()
    cached = MedSAPredictor(net, embedding_cache=(cache := EmbeddingCache()))
    image = torch.rand(1, 3, 40, 50)
    before = cached.encode(image)
    changed = image.clone()
    changed[0, 0, 0, 0] += 0.01
    cached.encode(changed)
    assert cache.misses == 2  # one pixel is a new image
    net.image_encoder.blocks[0].mlp.lin1.weight.add_(0.01)  # an in-place update, as an optimizer step
    after = cached.encode(image)
    assert cache.misses == 3 and not torch.equal(after, before)
    assert torch.equal(after, net.encode(image))  # the recomputed one is the new encoder's
    state = {k: v.clone() for k, v in _net().state_dict().items()}
    net.load_state_dict(state)  # back to the first weights: the first embedding is valid again
    assert torch.equal(cached.encode(image), before) and cache.hits == 1


def test_cache_is_bypassed_while_the_encoder_trains():
    for trainable, spatial in (("medsa", 2), ("full", 2)):
        net = MedSA(spatial, 3, 2, "vit_tiny", image_size=64, trainable=trainable)
        MedSAPredictor(net, embedding_cache=(cache := EmbeddingCache())).encode(torch.rand(1, 3, 32, 32))
        assert cache.misses == cache.hits == 0
    samda_3d = MedSA(3, 1, 2, "vit_tiny", image_size=64, trainable="samda")
    assert samda_3d.encoder_is_frozen()  # SAM-DA leaves the encoder exactly SAM's: no SD-Trans either
    with_depth = MedSA(3, 1, 2, "vit_tiny", image_size=64, trainable="samda", depth_attention=True)
    with_depth.requires_grad_(False)
    assert not with_depth.encoder_is_frozen()  # slices mix: a slice's embedding depends on its neighbours


@torch.no_grad()
def test_memory_limit_and_disk_cache(tmp_path):
    net = _net()
    images = torch.rand(4, 3, 32, 32)
    one = net.encode(images[:1])
    size = one.numel() * one.element_size()
    cached = MedSAPredictor(net, embedding_cache=(small := EmbeddingCache(max_bytes=2 * size, directory=tmp_path)))
    cached.encode(images[:1])
    small.max_disk_bytes = 3 * next(tmp_path.glob("*.pt")).stat().st_size  # three files, header included
    cached.encode(images)
    assert len(small) == 2  # least recently used dropped beyond the memory budget
    assert len(list(tmp_path.glob("*.pt"))) == 3  # oldest file removed beyond the disk budget
    fresh = EmbeddingCache(directory=tmp_path)  # another run reads what is on disk
    assert torch.equal(MedSAPredictor(net, embedding_cache=fresh).encode(images[3:]), fresh.embed(
        net._to_sam_intensity(torch.nn.functional.interpolate(images[3:], size=(64, 64), mode="bilinear",
                                                              antialias=True)), net.image_encoder,
        net.image_encoder))
    assert fresh.hits >= 1
