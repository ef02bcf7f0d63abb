"""Click latency in MONAI Label: the first click on an image (image encoder and mask decoder) and each next click on
the same image (mask decoder only: the image embedding is cached).

    python benchmarks/click_latency.py                                        # vit_b at 1024, skin-lesion bundle
    python benchmarks/click_latency.py --variant vit_tiny --image-size 256    # a quick look
    python benchmarks/click_latency.py --bundle medsa_hippocampus_mri --image-size 256   # a 3D volume (SD-Trans)
    python benchmarks/click_latency.py --bundle medsa_hippocampus_mri --variant vit_tiny --image-size 128 \
        --trainable full --model runs/hippocampus/medsa/models/model.pt \
        --volume Task04_Hippocampus/imagesTr/hippocampus_003.nii.gz

Each click goes through MONAI Label 0.8.5's own infer task, in process (``BundleInferTask`` of type ``deepedit``
on a copy of the bundle, as its ``monaibundle`` app builds it for a ``*_deepedit`` model; no HTTP): the image is
read, pre-processed with the clicks as guidance channels, segmented, post-processed and the label written to a
file, as for a click from a viewer. Without monailabel (or with ``--no-monailabel``) the clicks go through the
bundle's pre-processing, inferer, network and post-processing only. The weights are random (the times do not depend
on them). The first click is on an image not seen before; each next click adds one click on the same image. Times
are medians over ``--images`` images, after one warm-up image.

For a volume (the hippocampus bundle) it also times 3D prompt propagation on one volume, the embedding computed
once: a click on one slice segmenting the structure slice by slice (the predictor's ``propagation``, the default),
beside the same click prompting its own slice only (``propagation=False``, one batched decoder pass over all
slices), the next click of that session (one slice further, the previous prediction fed back: only the slices
with a click not yet obeyed are decoded again, the change confined to the regions those touch), the cost per
decoded (slice, class) pair, and the first and next click decoded in a window around them (``ZoomPredictor``,
``--zoom-margin``; the window's image is encoded at the first click and cached). The volume is padded in-plane
to the bundle's patch, as the bundle's click path pads it. The click goes to the centre of the first class as the
model segments it automatically (on its middle slice). How far a click propagates depends on the weights: give a
trained ``--model`` and a real ``--volume`` for figures that mean something; random weights time the mechanics
only.

``--runtime onnx`` compares, in one run, PyTorch with ONNX Runtime on the network itself (no bundle pipeline, no
MONAI Label): the first click on an image (encoder, then the prompt decoder) and the next click (the prompt
decoder only, with the previous low-resolution mask fed back), for each ``--variants`` on a 2D RGB image of
``--image-size`` pixels and on a 3D volume (a Task04-sized 36 x 50 x 35 volume, SD-Trans over all its slices, at
``--volume-image-size``), after exporting the network with :func:`medsa_monai.export.export_onnx`::

    python benchmarks/click_latency.py --runtime onnx                      # vit_tiny and vit_b, 2D 1024 and 3D
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import SpatialPad
from scipy import ndimage

from medsa_monai.data import make_synthetic_dataset, make_synthetic_lesion_folder
from medsa_monai.predictor import (
    EmbeddingCache,
    MedSAPredictor,
    ZoomPredictor,
    calibrated_correction_depth,
    calibrated_propagation_weight,
    calibrated_removal_radius,
)

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def make_bundle(name: str, target: Path, variant: str, image_size: int, trainable: str | None = None) -> Path:
    """A copy of the bundle with ``variant`` at ``image_size`` and a randomly initialised ``models/model.pt``."""
    shutil.copytree(BUNDLES / name, target, ignore=shutil.ignore_patterns("*.pth", "eval", "__pycache__"))
    overrides = {"sam_variant": variant, "image_size": image_size, "num_workers": 0}
    if trainable is not None:
        overrides["trainable"] = trainable
    for config in ("train.json", "inference.json"):
        path = target / "configs" / config
        content = json.loads(path.read_text())
        content.update(overrides)
        path.write_text(json.dumps(content, indent=2))
    parser = ConfigParser()
    parser.read_config(str(target / "configs" / "train.json"))
    parser.update({"bundle_root": str(target), "sam_checkpoint": "none"})
    torch.manual_seed(0)
    (target / "models").mkdir(exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), target / "models" / "model.pt")
    return target


def make_images(name: str, folder: Path, count: int) -> tuple[list[Path], list[list[list[float]]], str]:
    """``count`` synthetic images of the bundle's kind, a sequence of clicks on each, and the clicked label."""
    rng = np.random.RandomState(0)
    if name == "samda_skin_lesion":  # PH2-sized dermoscopy images
        paths = sorted((make_synthetic_lesion_folder(folder, count, size=(576, 768)) / "images").glob("*.png"))
        shape, label = (768, 576), "lesion"
    else:  # Task04-sized volumes
        paths = sorted((make_synthetic_dataset(folder, count, shape=(36, 50, 35)) / "imagesTr").glob("*.nii.gz"))
        shape, label = (36, 50, 35), "anterior"
    clicks = [[(rng.uniform(0.3, 0.7, size=len(shape)) * np.array(shape)).round().tolist() for _ in range(8)]
              for _ in paths]
    return paths, clicks, label


class PipelineClicks:
    """The bundle's pre-processing, inferer, network and post-processing, without MONAI Label."""

    def __init__(self, bundle: Path, device: str) -> None:
        self.parser = ConfigParser()
        self.parser.read_config(str(bundle / "configs" / "inference.json"))
        self.parser.update({"bundle_root": str(bundle), "use_click": True, "device": device,
                            "output_dir": str(bundle / "eval")})
        self.network = self.parser.get_parsed_content("network_def").to(device).eval()
        self.network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
        self.preprocessing = self.parser.get_parsed_content("preprocessing")
        self.inferer = self.parser.get_parsed_content("inferer")
        self.device = device

    def __call__(self, request: dict) -> None:
        data = self.preprocessing(dict(request))
        with torch.no_grad():
            data["pred"] = self.inferer(data["image"][None].to(self.device), self.network)[0]

    @property
    def cache(self):
        return self.inferer.embedding_cache  # the click inferer keeps its predictor's cache across clicks


class MonaiLabelClicks:
    """MONAI Label's own infer task for a deepedit model, in process."""

    def __init__(self, bundle: Path, device: str) -> None:
        from monailabel.tasks.infer.bundle import BundleInferTask

        self.task = BundleInferTask(str(bundle), {}, type="deepedit")
        self.device = device

    def __call__(self, request: dict) -> None:
        result, _ = self.task({**request, "device": self.device})
        if isinstance(result, str):
            Path(result).unlink(missing_ok=True)

    @property
    def cache(self):
        return self.task.inferer().embedding_cache  # parsed once by MONAI Label, kept across requests


def propagation_latency(bundle: Path, volume: Path, device: str, model: Path | None, repeats: int = 5,
                        zoom_margin: float = 0.5) -> dict:
    """Time one click on a volume with and without propagation, the embedding computed once beforehand; and the
    same click and the next one decoded in a window around them (:class:`ZoomPredictor`)."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle), "device": device, "output_dir": str(bundle / "eval")})
    network = parser.get_parsed_content("network_def").to(device).eval()
    state = torch.load(model or bundle / "models" / "model.pt", weights_only=True, map_location=device)
    network.load_state_dict(state.get("model", state))  # a model.pt or a whole-training-state checkpoint
    # the bundle's predictor; with a model, the propagation weight and removal radius chosen for it after training
    weight = calibrated_propagation_weight(model.parent) if model else 0.0
    predictor = MedSAPredictor(network, encode_depth=parser.get_parsed_content("encode_depth"),
                               dense_prompts=parser.get_parsed_content("dense_prompts"),
                               propagation_automatic_weight=weight,
                               removal_radius=calibrated_removal_radius(model.parent) if model else None,
                               correction_depth_radius=calibrated_correction_depth(model.parent) if model else 0)
    preprocessing = parser.get_parsed_content("preprocessing")
    image = preprocessing({"image": str(volume)})["image"][None].to(device)
    frame = parser.get_parsed_content("plan").frame_size
    if frame is not None:  # as the bundle's click path does: the volume padded in-plane to the patch
        image = SpatialPad([*frame, -1])(image[0])[None]
    with torch.no_grad():  # click the centre of the first class as the model finds it automatically
        automatic = network(image).argmax(1)[0].cpu().numpy() == 1
    if automatic.any():
        slices = np.flatnonzero(automatic.any(axis=(0, 1)))
        middle = int(slices[len(slices) // 2])
        distance = ndimage.distance_transform_edt(automatic[..., middle])
        point = [*np.unravel_index(int(np.argmax(distance)), distance.shape), middle]
    else:
        point = [s // 2 for s in image.shape[2:]]
    points = torch.tensor([[[point]] + [[[0.0] * 3]] * (network.num_classes - 1)], dtype=torch.float32, device=device)
    labels = torch.tensor([[[1]] + [[-1]] * (network.num_classes - 1)], device=device)
    pairs = []
    network.mask_decoder.register_forward_hook(lambda module, args, out: pairs.append(out[0].shape[0]))

    def timed(propagate: bool, correction: bool = False) -> tuple[float, int, int]:
        predictor.propagation = propagate
        times, reached = [], 0
        with torch.no_grad():
            embeddings = predictor.encode(image)
            clicks, click_labels, previous = points, labels, None
            if correction:  # a second click, one slice further, in the session the first click started
                previous = predictor.decode(embeddings, image.shape, points, labels)
                second = points[:, :1].clone()
                second[..., 0, 2] = min(point[2] + 1, image.shape[-1] - 1)
                clicks = torch.cat([points, torch.cat([second, points[:, 1:]], 1)], 2)
                click_labels = torch.cat([labels, labels], 2)
            for _ in range(repeats):
                pairs.clear()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                low_res = predictor.decode(embeddings, image.shape, clicks, click_labels, mask_inputs=previous)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
                reached = int((low_res[0, 0] > 0).flatten(0, 1).any(0).sum())
        return statistics.median(times), sum(pairs), reached

    with torch.no_grad():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        predictor.encode(image)
        encode = time.perf_counter() - start
    propagated, propagated_pairs, propagated_slices = timed(True)
    correction, correction_pairs, _ = timed(True, correction=True)
    own_slice, own_pairs, own_slices = timed(False)
    zoomed = zoomed_latency(predictor, image, points, labels, point, repeats, zoom_margin)
    return {**zoomed, "depth": image.shape[-1], "encode": encode, "propagated": propagated,
            "propagated_pairs": propagated_pairs, "propagated_slices": propagated_slices, "own_slice": own_slice,
            "own_slice_pairs": own_pairs, "correction": correction, "correction_pairs": correction_pairs,
            "automatic_weight": predictor.propagation_automatic_weight}


def zoomed_latency(predictor: MedSAPredictor, image: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
                   point: list, repeats: int, margin: float) -> dict:
    """A click decoded in its window: the first (the window's image encoded, then decoded) and the next click of
    that session (the window's embedding from the cache when the window stays), medians of ``repeats``."""
    settings = {k: getattr(predictor, k) for k in ("encode_depth", "dense_prompts", "propagation_automatic_weight",
                                                    "removal_radius", "correction_depth_radius")}
    device = image.device.type

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    first, following, factors = [], [], []
    with torch.no_grad():
        for _ in range(repeats):
            zoom = ZoomPredictor(MedSAPredictor(predictor.network, embedding_cache=EmbeddingCache(), **settings),
                                 margin=margin)
            session = zoom.encode(image)
            sync()
            start = time.perf_counter()
            previous = zoom.decode(session, image.shape, points, labels)
            sync()
            first.append(time.perf_counter() - start)
            factors.append(zoom.last_windows[0].factor)
            second = points[:, :1].clone()
            second[..., 0, 2] = min(point[2] + 1, image.shape[-1] - 1)
            clicks = torch.cat([points, torch.cat([second, points[:, 1:]], 1)], 2)
            sync()
            start = time.perf_counter()
            zoom.decode(session, image.shape, clicks, torch.cat([labels, labels], 2), mask_inputs=previous)
            sync()
            following.append(time.perf_counter() - start)
    return {"zoomed_first": statistics.median(first), "zoomed_next": statistics.median(following),
            "zoom": statistics.median(factors), "zoom_margin": margin}


def _median_time(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _compare_runtimes(variant: str, case: str, kwargs: dict, shape: tuple[int, ...], repeats: int) -> dict:
    """One network: the same click through PyTorch (the graphs' modules, eager) and ONNX Runtime."""
    from medsa_monai.export import ImageEncoderGraph, PromptDecoderGraph, export_onnx
    from medsa_monai.networks import MedSA
    from medsa_monai.predictor import OnnxPredictor

    torch.manual_seed(0)
    network = MedSA(sam_variant=variant, **kwargs).eval()
    image = torch.rand(1, *shape)
    row = shape[-1] // 2 if case == "3D" else 0
    point = np.array([[18.0, 25.0] + ([float(row)] if case == "3D" else [])])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export_onnx(network, tmp)
        export_seconds = time.perf_counter() - start
        predictor = OnnxPredictor(tmp)
        predictor.set_image(image[0].numpy())
        _, fed_back = predictor.predict(point, np.ones(1), slice_index=row if case == "3D" else None)

        def onnx_first() -> None:
            predictor.set_image(image[0].numpy())
            predictor.predict(point, np.ones(1), slice_index=row if case == "3D" else None)

        def onnx_next() -> None:
            predictor.predict(point, np.ones(1), mask_input=fed_back, slice_index=row if case == "3D" else None)

        onnx_first_time = _median_time(onnx_first, max(1, repeats // 3))
        onnx_next_time = _median_time(onnx_next, repeats)

    encoder, decoder = ImageEncoderGraph(network), PromptDecoderGraph(network)
    scale = network.image_size / torch.tensor(shape[1:3], dtype=torch.float32)
    xy = ((torch.tensor(point[:, :2], dtype=torch.float32) + 0.5) * scale - 0.5).flip(-1)
    inputs = {"point_coords": torch.cat([xy, torch.zeros(1, 2)])[None],
              "point_labels": torch.tensor([[1.0, -1.0]]), "has_mask_input": torch.ones(1),
              "mask_input": torch.from_numpy(fed_back), "class_index": torch.zeros(1, dtype=torch.long)}

    def torch_first() -> None:
        embeddings = encoder(image)
        decoder(embeddings[row:row + 1], **{**inputs, "has_mask_input": torch.zeros(1)})

    with torch.no_grad():
        embeddings = encoder(image)
        torch_first_time = _median_time(torch_first, max(1, repeats // 3))
        torch_next_time = _median_time(lambda: decoder(embeddings[row:row + 1], **inputs), repeats)
    return {"variant": variant, "case": case, "size": kwargs["image_size"], "shape": shape,
            "torch_first": torch_first_time, "torch_next": torch_next_time, "onnx_first": onnx_first_time,
            "onnx_next": onnx_next_time, "export_seconds": export_seconds}


def runtime_comparison(variants: list[str], image_size: int, volume_image_size: int, repeats: int) -> list[dict]:
    """First and next click in PyTorch and ONNX Runtime, per variant and case (see the module docstring)."""
    cases = [("2D", dict(spatial_dims=2, in_channels=3, out_channels=2, image_size=image_size, trainable="samda"),
              (3, 576, 768)),
             ("3D", dict(spatial_dims=3, in_channels=1, out_channels=3, image_size=volume_image_size,
                         trainable="medsa", depth_attention=True), (1, 36, 50, 35))]
    rows = []
    for variant in variants:
        for case, kwargs, shape in cases:
            rows.append(_compare_runtimes(variant, case, kwargs, shape, repeats))
            print(f"  {variant} {case} done", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="samda_skin_lesion", choices=["samda_skin_lesion", "medsa_hippocampus_mri"])
    parser.add_argument("--variant", default="vit_b")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--images", type=int, default=3, help="images timed (after one warm-up image)")
    parser.add_argument("--clicks", type=int, default=4, help="clicks per image")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-monailabel", action="store_true", help="time the bundle pipeline without MONAI Label")
    parser.add_argument("--model", type=Path, default=None, help="trained model.pt for the propagation figures")
    parser.add_argument("--trainable", default=None, help="the trained model's preset (e.g. full: no adapters)")
    parser.add_argument("--volume", type=Path, default=None, help="volume for the propagation figures")
    parser.add_argument("--zoom-margin", type=float, default=0.5, help="margin of the zoomed click's window")
    parser.add_argument("--runtime", choices=["pytorch", "onnx"], default="pytorch",
                        help="onnx: PyTorch beside ONNX Runtime on the network itself (see above)")
    parser.add_argument("--variants", nargs="+", default=["vit_tiny", "vit_b"], help="with --runtime onnx")
    parser.add_argument("--volume-image-size", type=int, default=256, help="with --runtime onnx: the 3D case's")
    parser.add_argument("--repeats", type=int, default=9, help="with --runtime onnx: timed repeats (median)")
    args = parser.parse_args()

    if args.runtime == "onnx":
        rows = runtime_comparison(args.variants, args.image_size, args.volume_image_size, args.repeats)
        print(f"first and next click, PyTorch {torch.__version__} ({torch.get_num_threads()} threads) and ONNX "
              f"Runtime (default threads), CPU; median of {args.repeats} next clicks")
        print("| variant | input | SAM frame | PyTorch first | PyTorch next | ONNX Runtime first | ONNX Runtime next | "
              "export |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            shape = " x ".join(str(s) for s in r["shape"][1:])
            print(f"| {r['variant']} | {r['case']} {shape} | {r['size']} | {r['torch_first']:.3f} s | "
                  f"{r['torch_next'] * 1000:.1f} ms | {r['onnx_first']:.3f} s | {r['onnx_next'] * 1000:.1f} ms | "
                  f"{r['export_seconds']:.0f} s |")
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = make_bundle(args.bundle, tmp / "model" / f"{args.bundle}_deepedit", args.variant, args.image_size,
                             args.trainable)
        paths, clicks, label = make_images(args.bundle, tmp / "images", args.images + 1)
        runner = None
        if not args.no_monailabel:
            try:
                runner, how = MonaiLabelClicks(bundle, args.device), "MONAI Label 0.8.5 deepedit infer task"
            except ImportError:
                print("monailabel is not installed: timing the bundle pipeline without it")
        if runner is None:
            runner, how = PipelineClicks(bundle, args.device), "bundle pipeline (no MONAI Label)"

        def click(path: Path, points: list) -> float:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            runner({"image": str(path), label: points, "background": []})
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - start

        first, later = [], []
        for i, (path, points) in enumerate(zip(paths, clicks, strict=True)):
            times = [click(path, points[: n + 1]) for n in range(args.clicks)]
            if i:  # the first image warms up
                first.append(times[0])
                later += times[1:]
        cache = runner.cache
        threads = f", {torch.get_num_threads()} threads" if args.device == "cpu" else ""
        print(f"click latency: {args.bundle}, {args.variant} at {args.image_size}, {args.device}{threads}; {how}")
        print(f"  first click on an image (encoder + decoder): {statistics.median(first):8.3f} s  "
              f"(median of {len(first)} images)")
        print(f"  next click on the same image (decoder):      {statistics.median(later):8.3f} s  "
              f"(median of {len(later)} clicks)")
        print(f"  embedding cache: {cache.misses} computed, {cache.hits} reused")
        if args.bundle == "medsa_hippocampus_mri":
            found = propagation_latency(bundle, args.volume or paths[0], args.device, args.model,
                                        zoom_margin=args.zoom_margin)
            print(f"3D click on one slice of a {found['depth']}-slice volume, embedding computed once "
                  f"({found['encode']:.3f} s to encode); {'trained' if args.model else 'random'} weights, "
                  f"propagation_automatic_weight {found['automatic_weight']}:")
            print(f"  propagated (default):        {found['propagated']:8.3f} s, {found['propagated_pairs']} (slice, "
                  f"class) decoder passes, structure on {found['propagated_slices']} slices; "
                  f"{found['propagated'] / max(found['propagated_pairs'], 1) * 1000:.2f} ms per pass")
            print(f"  next click of that session:  {found['correction']:8.3f} s, {found['correction_pairs']} (slice, "
                  f"class) decoder passes (the slices with a pending click, the other class automatic on every slice), "
                  f"confined to the regions it changes")
            print(f"  own slice only (no propagation): {found['own_slice']:8.3f} s, {found['own_slice_pairs']} passes "
                  f"in one batch; {found['own_slice'] / max(found['own_slice_pairs'], 1) * 1000:.2f} ms per pass")
            print(f"  zoomed (margin {found['zoom_margin']:g}, window magnified {found['zoom']:.2f} x): first click "
                  f"{found['zoomed_first']:8.3f} s (the window encoded, then decoded), next click "
                  f"{found['zoomed_next']:8.3f} s")


if __name__ == "__main__":
    main()
