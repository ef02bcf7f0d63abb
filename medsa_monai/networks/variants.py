"""The SAM backbones: official ViT-B/L/H hyper-parameters and two small variants for tests and demos."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SamVariant", "SAM_VARIANTS", "get_sam_variant", "identify_variant"]


@dataclass(frozen=True)
class SamVariant:
    """Hyper-parameters of one SAM image encoder; prompt encoder and mask decoder are the same for all variants.

    Args:
        name: registry name (``vit_b``...).
        embed_dim: ViT token width.
        depth: number of ViT blocks.
        num_heads: attention heads per block.
        global_attn_indexes: blocks with global attention; the others attend inside windows.
        window_size: side of the attention windows, in tokens.
        patch_size: pixels per token side.
        prompt_embed_dim: width of the prompt encoder and mask decoder (SAM: 256).
        official_file: file name of the official release, where there is one.
        official_url: where the official checkpoint is published.
    """

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    patch_size: int = 16
    prompt_embed_dim: int = 256
    official_file: str | None = None
    official_url: str | None = None


_URL = "https://dl.fbaipublicfiles.com/segment_anything/"

SAM_VARIANTS: dict[str, SamVariant] = {
    "vit_b": SamVariant("vit_b", 768, 12, 12, (2, 5, 8, 11), official_file="sam_vit_b_01ec64.pth",
                        official_url=_URL + "sam_vit_b_01ec64.pth"),
    "vit_l": SamVariant("vit_l", 1024, 24, 16, (5, 11, 17, 23), official_file="sam_vit_l_0b3195.pth",
                        official_url=_URL + "sam_vit_l_0b3195.pth"),
    "vit_h": SamVariant("vit_h", 1280, 32, 16, (7, 15, 23, 31), official_file="sam_vit_h_4b8939.pth",
                        official_url=_URL + "sam_vit_h_4b8939.pth"),
    # Not a released model: 4 blocks of width 192 (3 heads of 64, as SAM's head width), global attention in
    # blocks 1 and 3, 4-token windows in blocks 0 and 2 (SAM's 14-token windows would pad the small token grids
    # of small images many times over), SAM's own prompt encoder and mask decoder. About 6.5 M parameters.
    "vit_tiny": SamVariant("vit_tiny", 192, 4, 3, (1, 3), window_size=4),
    # Narrower still, for the demo on a CPU: width 128 (2 heads of 64), and a prompt encoder and mask decoder of
    # width 128 instead of SAM's 256. About 2.7 M parameters; no SAM checkpoint fits it.
    "vit_nano": SamVariant("vit_nano", 128, 4, 2, (1, 3), window_size=4, prompt_embed_dim=128),
}


def get_sam_variant(name: str) -> SamVariant:
    """Return the variant called ``name``; raise ``ValueError`` listing the known ones otherwise."""
    try:
        return SAM_VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown SAM variant {name!r}; choose one of {sorted(SAM_VARIANTS)}") from None


def identify_variant(embed_dim: int, depth: int) -> str:
    """Name the variant with this encoder width and depth, or describe an unknown one."""
    for variant in SAM_VARIANTS.values():
        if (variant.embed_dim, variant.depth) == (embed_dim, depth):
            return variant.name
    return f"an unknown ViT (embed_dim={embed_dim}, {depth} blocks)"
