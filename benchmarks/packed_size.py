"""Size of a packed bundle with its trained model, per trainable preset: what a user downloads to share a model.

    python benchmarks/packed_size.py                       # vit_b at 1024, the skin-lesion bundle
    python benchmarks/packed_size.py --variant vit_tiny --image-size 256

For each preset a network is built on a base checkpoint (random weights in the official format: sizes do not
depend on the values), its trained weights are saved as training saves them (shared weights: only what trained,
for a frozen base; the whole network for ``full``), and ``medsa bundle pack --model`` packs a copy of the bundle with
them. The base checkpoint itself is a large file (``large_files.yml``), downloaded once by whoever unpacks.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from medsa_monai.bundle.packaging import pack_bundle
from medsa_monai.data.hashing import file_sha256
from medsa_monai.networks import MedSA, trained_weights

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
PRESETS = ("samda", "decoder", "lora", "adapters_only", "medsa", "full")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="samda_skin_lesion")
    parser.add_argument("--variant", default="vit_b")
    parser.add_argument("--image-size", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / args.bundle
        shutil.copytree(BUNDLES / args.bundle, source, ignore=shutil.ignore_patterns("*.pt", "*.pth", "eval"))
        (source / "models").mkdir(exist_ok=True)
        base = source / "models" / f"base_{args.variant}.pth"
        torch.manual_seed(0)
        plain = MedSA(2, 3, 2, args.variant, image_size=args.image_size, trainable="full", input_layer=False,
                      architecture={"adapters": False, "hyper_prompt": False, "samda_tokens": 0, "lora_rank": 0})
        torch.save({k: v for k, v in plain.state_dict().items() if not k.startswith("class_prompts")}, base)
        del plain
        (source / "large_files.yml").write_text(
            f'large_files:\n  - path: "models/{base.name}"\n    url: "https://example.org/{base.name}"\n'
            f'    hash_val: "{file_sha256(base)}"\n    hash_type: "sha256"\n')
        print(f"packed {args.bundle} with a trained model, {args.variant} at {args.image_size}; base checkpoint "
              f"{base.stat().st_size / 2**20:.1f} MiB (a large file, not in the zip)")
        print("| preset | trainable parameters | models/model.pt | packed zip |")
        print("|---|---|---|---|")
        for preset in PRESETS:
            network = MedSA(2, 3, 2, args.variant, sam_checkpoint=base, image_size=args.image_size,
                            trainable=preset)
            model = tmp / f"{preset}.pt"
            torch.save(trained_weights(network), model)
            trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
            total = sum(p.numel() for p in network.parameters())
            del network
            for config in (source / "configs").glob("*.json"):  # a whole state dict does not name its preset
                text = config.read_text()
                config.write_text(re.sub(r'"trainable": "[a-z_]+"', f'"trainable": "{preset}"', text))
            archive = pack_bundle(source, tmp / "dist" / preset, model=model)
            with zipfile.ZipFile(archive) as packed:
                shipped = packed.getinfo(f"{args.bundle}/models/model.pt").file_size
            print(f"| {preset} | {trainable:,} ({100 * trainable / total:.2f}%) | {shipped / 2**20:.2f} MiB | "
                  f"{archive.stat().st_size / 2**20:.2f} MiB |", flush=True)


if __name__ == "__main__":
    main()
