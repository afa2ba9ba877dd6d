"""The GPU measurements of issue 13 in one script, under 5 minutes on one GPU; ``--smoke`` runs every code
path at tiny sizes, on the CPU too, in seconds (the tests run it).

    python benchmarks/gpu.py [--device auto|cuda|cpu] [--json gpu.json]    # the measurements
    python benchmarks/gpu.py --smoke --device cpu --json smoke.json         # every code path, no real numbers

1. Protected 224-px images per minute: ``--images`` images cut from examples/photos (random crops and
   flips, seeded, so they differ), EfficientNet-Lite0, p-fgsm at the paper's settings with per-image
   stopping. Each call draws new targets, so the active batch shrinks through a new sequence of sizes:
   the first call and the best later one, with the loop's ``bucket`` (the batch of images still going
   padded to a power of two) off and on, side by side in one process.
2. ms per image-iteration of ResNet-50 (random weights saved in the official Places365 checkpoint
   format, loaded as ``--weights`` loads it) at each of ``--batch-sizes`` in fp32 and bf16: p-fgsm with
   ``threshold=1.0``, so that nothing stops early, as in ``benchmarks/run.py``, whose timing and loops
   this reuses; against the one-image loops: ``ref`` (the paper's loop tidied, with the row's classifier)
   and ``paper`` (the paper's code in outline: fp32, the network as published, weight gradients too).
3. The wall time of ``scenepriv protect --device DEVICE`` on one ``--megapixels`` photo and on a folder
   of photos (``--folder``, default examples/photos at their own size), Python's start and the model's
   loading included; and the time the command reports, which starts after the model is loaded.

``--smoke``: 4 images and at most 2 iterations in part 1; ResNet-18 (the same checkpoint format and loops,
a third of ResNet-50's work) at batch 1 and 2, 1 iteration, no warm-up calls in part 2; a 0.05-megapixel
photo and a folder of two 0.02-megapixel ones, with ``--max-iter 1``, in part 3.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from PIL import Image

import scenepriv
from scenepriv import methods
from scenepriv.images import load_photo
from scenepriv.zoo import Classifier, resize_to_input

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (benchmarks/run.py: timing with CUDA synchronisation, the one-image loops)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "photos"

# max_iter: p-fgsm's cap in part 1 (None: the paper's 50); warmup: an untimed first call per shape in part 2
# (kernel choice, cuDNN plans); folder_photos, folder_megapixels: a smaller copy of --folder (None: as it is);
# cli_options: added to the command's own (smoke: 1 iteration instead of the default strength's up to 200)
FULL = {"images": 64, "calls": 3, "max_iter": None,
        "arch": "resnet50", "batch_sizes": [64, 256], "iterations": 5, "repeats": 2, "reference_images": 2,
        "warmup": True, "megapixels": 12.0, "folder_photos": None, "folder_megapixels": None, "cli_options": []}
SMOKE = {"images": 4, "calls": 2, "max_iter": 2,
         "arch": "resnet18", "batch_sizes": [1, 2], "iterations": 1, "repeats": 1, "reference_images": 1,
         "warmup": False, "megapixels": 0.05, "folder_photos": 2, "folder_megapixels": 0.02,
         "cli_options": ["--max-iter", "1"]}


# ---- 1. protected 224-px images per minute ------------------------------------------------------------------------


def crops(count: int, seed: int = 0) -> torch.Tensor:
    """``count`` different 224-px images: random crops (half to all of the shorter side) and flips of the examples."""
    generator = torch.Generator().manual_seed(seed)
    photos = [load_photo(path).pixels for path in sorted(EXAMPLES.glob("*.jpg"))]
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


def throughput(classifier: Classifier, images: torch.Tensor, calls: int, bucket: bool,
               max_iter: int | None = None) -> dict[str, float]:
    """Images per minute of protect() in its first call and its best later call, each with a new seed (new
    targets: a new sequence of active-batch sizes). ``max_iter``: a cap below the paper's (smoke)."""
    loop = methods.sign_step_loop

    def forced(*args: Any, **options: Any) -> Any:  # a partial would lose to protect()'s own bucket argument
        return loop(*args, **{**options, "bucket": bucket})

    overrides = {} if max_iter is None else {"max_iter": max_iter}
    methods.sign_step_loop = forced
    try:
        rates = []
        for call in range(calls):
            protect = functools.partial(scenepriv.protect, images, classifier, "p-fgsm", seed=call, **overrides)
            seconds, _, _ = bench.timed(protect, images.device)  # torch.cuda.synchronize before and after
            rates.append(60 * len(images) / seconds)
    finally:
        methods.sign_step_loop = loop
    return {"first_call": rates[0], "best_later_call": max(rates[1:], default=rates[0])}


# ---- 2. ResNet-50 ms per image-iteration --------------------------------------------------------------------------


def places365_checkpoint(arch: str, folder: Path) -> Path:
    """Random weights of torchvision's ``arch`` with 365 outputs, saved as the official Places365 files are:
    DataParallel's ``module.`` prefix on every key, inside ``state_dict``."""
    torch.manual_seed(0)
    weights = getattr(torchvision.models, arch)(num_classes=365).state_dict()
    path = folder / f"{arch}_places365.pth.tar"
    torch.save({"epoch": 1, "arch": arch, "state_dict": {f"module.{k}": v for k, v in weights.items()}}, path)
    return path


def ms_per_image_iteration(loop: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Best time of ``repeats`` calls of ``loop`` per image-iteration done; ``loop`` returns the iterations it
    did, or a Protection whose records count them."""
    seconds, _, done = bench.best_of({"loop": loop}, device, repeats)["loop"]
    if isinstance(done, scenepriv.Protection):
        done = sum(record["iterations"] for record in done.records)
    return 1000 * seconds / done


def resnet_speed(weights: Path, device: torch.device, settings: dict[str, Any]) -> dict[str, Any]:
    """ms per image-iteration of Places365's ``settings["arch"]`` with ``weights``: p-fgsm at each batch size
    in fp32 and bf16 (``threshold=1.0``: the whole batch runs every iteration), the tidied one-image loop with
    each of these classifiers, and the paper's one-image loop with the network as published."""
    iterations, repeats, warmup = settings["iterations"], settings["repeats"], settings["warmup"]

    def load(options: bench.Options) -> Classifier:
        return scenepriv.load_classifier(f"{settings['arch']}-places365", str(weights), device,
                                         **options.classifier_options())

    count = settings["reference_images"]  # one image at a time: the cost does not depend on the count
    images = bench.random_photos(count, device)
    targets = torch.randint(365, (count,), generator=torch.Generator().manual_seed(0)).to(device)  # never reached
    results: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        classifier = load(bench.Options(precision=precision))
        row: dict[str, float] = {}
        for batch in settings["batch_sizes"]:
            batch_images = bench.random_photos(batch, device)
            if warmup:
                bench.pfgsm(classifier, batch_images, 1)
            row[f"batch_{batch}"] = ms_per_image_iteration(
                functools.partial(bench.pfgsm, classifier, batch_images, iterations), device, repeats)
        if warmup:
            bench.reference_loop(classifier, images[:1], targets[:1], 1, 2.0)
        row["one_image_reference"] = ms_per_image_iteration(
            functools.partial(bench.reference_loop, classifier, images, targets, iterations, 1.0), device, repeats)
        results[precision] = row
    published = load(bench.PLAIN)
    if warmup:
        bench.paper_loop(published, images[:1], targets[:1], 1, 2.0)
    results["paper_loop"] = ms_per_image_iteration(
        functools.partial(bench.paper_loop, published, images, targets, iterations, 1.0), device, repeats)
    return results


# ---- 3. the command line ------------------------------------------------------------------------------------------


def resized_copy(source: Path, destination: Path, megapixels: float) -> Path:
    """``source`` resized (up or down) to about ``megapixels``, saved losslessly as ``destination``."""
    photo = Image.open(source).convert("RGB")
    scale = (megapixels * 1e6 / (photo.width * photo.height)) ** 0.5
    size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    photo.resize(size, Image.LANCZOS).save(destination)
    return destination


def command_seconds(inputs: Path, device: str, output: Path, options: list[str]) -> dict[str, float]:
    """Wall time of ``scenepriv protect INPUTS --device DEVICE``, and the time the command reports (from after
    the model is loaded), with the count of photos and of those protected. Raises if the command fails."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "scenepriv", "protect", str(inputs), "-o", str(output),
                           "--device", device, "--seed", "0", "--json", *options],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: a photo saved without reaching its goal: still a timed run
        raise RuntimeError(f"scenepriv protect exited with {done.returncode}:\n{done.stderr}")
    summary = json.loads(done.stdout)
    reported = re.search(r"^time\s+([0-9.]+) s", done.stderr, re.MULTILINE)
    if reported is None or not summary["records"]:
        raise RuntimeError(f"scenepriv protect saved no photo or reported no time:\n{done.stderr}")
    return {"wall": wall, "after_model_load": float(reported.group(1)), "photos": summary["photos"],
            "protected": summary["protected"]}


def command_runs(device: str, folder: Path, settings: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The command on one photo of ``settings["megapixels"]``, then on ``folder`` (or on a copy of its first
    ``folder_photos`` photos at ``folder_megapixels``, where the settings give these)."""
    options = settings["cli_options"]
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        photo = resized_copy(EXAMPLES / "leuvenA.jpg", work / "photo.png", settings["megapixels"])
        results = {"one_photo": command_seconds(photo, device, work / "out-photo", options)}
        if settings["folder_photos"] is not None or settings["folder_megapixels"] is not None:
            copy = work / "folder"
            copy.mkdir()
            for source in sorted(folder.glob("*.jpg"))[:settings["folder_photos"]]:
                if settings["folder_megapixels"] is None:
                    (copy / source.name).write_bytes(source.read_bytes())
                else:
                    resized_copy(source, copy / f"{source.stem}.png", settings["folder_megapixels"])
            folder = copy
        results["folder"] = command_seconds(folder, device, work / "out-folder", options)
    return results


# ---- the run ------------------------------------------------------------------------------------------------------


def measurements(results: dict[str, Any]) -> dict[str, float]:
    """Every number measured, by its path in ``results["measurements"]`` (``command_seconds.folder.wall``)."""
    flat: dict[str, float] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else key)
        else:
            flat[path] = node

    walk(results["measurements"], "")
    return flat


def table(results: dict[str, Any]) -> str:
    m, settings, photos = results["measurements"], results["settings"], results["command_photos"]
    machine = results["machine"]
    lines = [f"torch {machine['torch']} on {machine.get('gpu', machine['cpu'])}"
             + (" -- smoke sizes: checks the code paths, measures nothing" if results["smoke"] else ""), "",
             f"p-fgsm, EfficientNet-Lite0, {settings['images']} images of 224 px, per-image stopping: images/minute",
             f"{'bucket':<8} {'first call':>11} {'best later':>11}"]
    for key, label in (("bucket_off", "off"), ("bucket_on", "on")):
        rates = m["protect_224px_images_per_min"][key]
        lines.append(f"{label:<8} {rates['first_call']:>11.0f} {rates['best_later_call']:>11.0f}")
    speed = m["resnet_ms_per_image_iteration"]
    lines += ["", f"{settings['arch']}, random weights in the official Places365 format: ms per image-iteration",
              f"{'precision':<10} {'batch':>6} {'p-fgsm':>9} {'ref':>9} {'paper':>9} {'paper/p-fgsm':>13}"]
    for precision in ("fp32", "bf16"):
        for batch in settings["batch_sizes"]:
            ms = speed[precision][f"batch_{batch}"]
            lines.append(f"{precision:<10} {batch:>6} {ms:>9.3f} {speed[precision]['one_image_reference']:>9.2f} "
                         f"{speed['paper_loop']:>9.2f} {speed['paper_loop'] / ms:>13.1f}")
    lines += ["", f"scenepriv protect --device {results['device']}: seconds",
              f"{'input':<40} {'photos':>6} {'protected':>9} {'wall':>8} {'after load':>10}"]
    for key, label in (("one_photo", f"one {settings['megapixels']:g}-megapixel photo"),
                       ("folder", f"folder {Path(settings['folder']).name}")):
        seconds = m["command_seconds"][key]
        lines.append(f"{label:<40} {photos[key]['photos']:>6} {photos[key]['protected']:>9} "
                     f"{seconds['wall']:>8.1f} {seconds['after_model_load']:>10.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                        help="auto (default): cuda where PyTorch sees one, else cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every code path in seconds, no real numbers")
    parser.add_argument("--images", type=int, help="224-px images per protect() call (default 64; smoke 4)")
    parser.add_argument("--calls", type=int, help="protect() calls per bucket setting (default 3; smoke 2)")
    parser.add_argument("--arch", choices=["resnet50", "resnet18"], help="the Places365 network (default resnet50; "
                        "smoke resnet18)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, help="its batch sizes (default 64 256; smoke 1 2)")
    parser.add_argument("--iterations", type=int, help="its iterations per timed run (default 5; smoke 1)")
    parser.add_argument("--megapixels", type=float, help="the command's one photo (default 12; smoke 0.05)")
    parser.add_argument("--folder", type=Path, default=EXAMPLES, help="the command's folder (default examples/photos)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    settings = dict(SMOKE if args.smoke else FULL)
    for name in ("images", "calls", "arch", "batch_sizes", "iterations", "megapixels"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    settings["folder"] = str(args.folder)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA device")
    device = torch.device(args.device)

    start = time.perf_counter()
    results: dict[str, Any] = {"device": device.type, "machine": bench.machine(device), "smoke": args.smoke,
                               "settings": settings, "measurements": {}}
    m = results["measurements"]
    classifier = scenepriv.load_classifier(device=device, resize="bilinear", precision="auto")
    images = crops(settings["images"]).to(device)
    m["protect_224px_images_per_min"] = {
        f"bucket_{'on' if bucket else 'off'}": throughput(classifier, images, settings["calls"], bucket,
                                                          settings["max_iter"])
        for bucket in (False, True)}
    print("protect, 224 px:", json.dumps(m["protect_224px_images_per_min"]), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        weights = places365_checkpoint(settings["arch"], Path(folder))
        m["resnet_ms_per_image_iteration"] = resnet_speed(weights, device, settings)
    print(f"{settings['arch']}:", json.dumps(m["resnet_ms_per_image_iteration"]), flush=True)
    runs = command_runs(device.type, args.folder, settings)
    m["command_seconds"] = {key: {"wall": run["wall"], "after_model_load": run["after_model_load"]}
                            for key, run in runs.items()}
    results["command_photos"] = {key: {"photos": run["photos"], "protected": run["protected"]}
                                 for key, run in runs.items()}
    results["wall_s"] = time.perf_counter() - start

    print()
    print(table(results))
    bad = [path for path, value in measurements(results).items()  # the command prints its time to 0.1 s
           if not (math.isfinite(value) and (value > 0 or value == 0 and path.endswith("after_model_load")))]
    print(f"\nwall time {results['wall_s']:.0f} s" + (f"; not positive and finite: {', '.join(bad)}" if bad else ""))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
