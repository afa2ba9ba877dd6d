"""Real protection throughput on a GPU (or the CPU), with and without bucketed batch shapes.

    python benchmarks/gpu.py [--device cuda] [--images 64] [--calls 3] [--json gpu.json]

Protects ``--images`` 224-px images cut from examples/photos (random crops and flips, seeded, so
they differ) with EfficientNet-Lite0 and p-fgsm at the paper's settings, per-image stopping on:
each call draws new targets, so the active batch shrinks through a new sequence of sizes. Prints
protected images per minute for the first call and the best later call, with ``bucket`` on and off
(the loop's padding of the images still going to a power of two), side by side in one process, and
the wall time of ``scenepriv protect`` on one 12-megapixel photo. ResNet-50 ms per image-iteration
at batch 64 and 256 comes from ``benchmarks/run.py --device cuda --models resnet50 --batch-sizes 64 256``.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import scenepriv
from scenepriv import methods
from scenepriv.images import load_photo
from scenepriv.zoo import resize_to_input

ROOT = Path(__file__).resolve().parent.parent


def crops(count: int, seed: int = 0) -> torch.Tensor:
    """``count`` different 224-px images: random crops (half to all of the shorter side) and flips of the examples."""
    generator = torch.Generator().manual_seed(seed)
    photos = [load_photo(path).pixels for path in sorted((ROOT / "examples" / "photos").glob("*.jpg"))]
    images = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = min(photo.shape[1:])
        size = int(side * (0.5 + 0.5 * float(torch.rand(1, generator=generator))))
        top = int(torch.randint(photo.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(photo.shape[2] - size + 1, (1,), generator=generator))
        crop = photo[:, top:top + size, left:left + size]
        if bool(torch.rand(1, generator=generator) < 0.5):
            crop = crop.flip(2)
        images.append(resize_to_input(crop[None], (224, 224), "bilinear-antialias")[0])
    return torch.stack(images)


def throughput(classifier, images: torch.Tensor, calls: int, bucket: bool) -> dict[str, float]:
    """Images per minute of protect() for each call (new seeds: new targets, new batch-size sequences)."""
    loop = methods.sign_step_loop
    methods.sign_step_loop = functools.partial(loop, bucket=bucket)
    try:
        rates = []
        for call in range(calls):
            if images.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            scenepriv.protect(images, classifier, "p-fgsm", seed=call)
            if images.device.type == "cuda":
                torch.cuda.synchronize()
            rates.append(60 * len(images) / (time.perf_counter() - start))
    finally:
        methods.sign_step_loop = loop
    return {"first_call": rates[0], "best_later_call": max(rates[1:], default=rates[0])}


def cli_seconds(device: str, megapixels: float) -> float:
    """Wall time of ``scenepriv protect`` on one photo of about ``megapixels``, the model loading included."""
    with tempfile.TemporaryDirectory() as folder:
        photo = Image.open(ROOT / "examples" / "photos" / "leuvenA.jpg").convert("RGB")
        scale = (megapixels * 1e6 / (photo.width * photo.height)) ** 0.5
        photo.resize((round(photo.width * scale), round(photo.height * scale))).save(Path(folder, "big.png"))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "scenepriv", "protect", str(Path(folder, "big.png")), "-o",
                        str(Path(folder, "out")), "--device", device, "--seed", "0", "-q"], check=False)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    classifier = scenepriv.load_classifier(device=args.device, resize="bilinear", precision="auto")
    images = crops(args.images).to(args.device)
    results = {"device": args.device, "images": args.images, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}
    for bucket in (False, True):  # side by side in one process
        results[f"bucket={bucket}"] = throughput(classifier, images, args.calls, bucket)
        print(f"bucket={bucket}: images per minute, first call {results[f'bucket={bucket}']['first_call']:.0f}, "
              f"best later call {results[f'bucket={bucket}']['best_later_call']:.0f}", flush=True)
    results["cli_seconds"] = cli_seconds(args.device, args.megapixels)
    print(f"scenepriv protect, one {args.megapixels:g}-megapixel photo: {results['cli_seconds']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
