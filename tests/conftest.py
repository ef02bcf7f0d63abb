"""Shared fixtures: random-weight SAM checkpoints in the official format, built from segment_anything itself."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

MAX_WORKERS = 4

if os.environ.get("PYTEST_XDIST_WORKER"):
    # workers share the cores: one thread each, for this process and the commands it starts (two processes with
    # torch's default threads on two cores ran many times slower than one)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker per core, at most ``MAX_WORKERS`` (each holds trained bundles in memory)."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


TINY = dict(embed_dim=192, depth=4, num_heads=3, global_attn_indexes=(1, 3), window_size=4)


def reference_sam(image_size: int = 1024, embed_dim: int = 192, depth: int = 4, num_heads: int = 3,
                  global_attn_indexes: tuple[int, ...] = (1, 3), window_size: int = 4, prompt_embed_dim: int = 256
                  ) -> Sam:
    """A SAM assembled from segment_anything's classes exactly as its ``_build_sam`` does, at any size."""
    grid = image_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=depth, embed_dim=embed_dim, img_size=image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=num_heads, patch_size=16, qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=global_attn_indexes, window_size=window_size,
            out_chans=prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(embed_dim=prompt_embed_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(image_size, image_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_embed_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
    ).eval()


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values, position tables included (SAM zero-initialises those)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return module


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """``vit_tiny`` weights at SAM's native 1024, saved as the official files are: a plain state dict."""
    path = tmp_path_factory.mktemp("ckpt") / "sam_vit_tiny_random.pth"
    torch.save(randomise(reference_sam(1024, **TINY)).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_state(tiny_checkpoint) -> dict[str, torch.Tensor]:
    return torch.load(tiny_checkpoint, weights_only=True)


def run_monai_bundle(bundle: Path, *args: str, cwd: Path | None = None, timeout: int = 300, check: bool = True
                     ) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>`` with ``bundle``'s metadata and logging config, as a user runs it; with
    ``check``, a failure raises with the tail of the output."""
    configs = Path(bundle) / "configs"
    command = [sys.executable, "-m", "monai.bundle", *args, "--meta_file", str(configs / "metadata.json"),
               "--logging_file", str(configs / "logging.conf")]
    result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", errors="replace",
                            timeout=timeout, cwd=cwd)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(args[:2])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """``http://127.0.0.1:<free port>`` serving ``folder`` from a thread, shut down on exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def local_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    return {**env, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
