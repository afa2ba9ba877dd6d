"""Speed of scenepriv's p-fgsm against the paper's loop and torchattacks' BIM, and quality of the fast paths.

    python benchmarks/run.py                 # speed table (default settings: about 10 minutes on 2 CPU cores)
    python benchmarks/run.py --quality       # fp32 vs bf16 protection of real photos, side by side
    python benchmarks/run.py --full          # 10 iterations, best of 3 runs, reference on 4 images

Columns, in ms per image-iteration: ``p-fgsm`` (scenepriv.protect, batched); ``BIM`` (torchattacks'
targeted BIM, batched, targets given); ``BIM+t`` (the same, after the clean classification that
draws the targets from Eq. 10's set, which p-fgsm does within its first forward pass; at the
``--option-batch`` size only, to keep the run under 10 minutes); ``paper``
(the paper's published code, in outline: one image at a time, the network as published with its
parameters still requiring gradients, so every backward pass also computes the weight gradients,
and a second forward pass with autograd on for the stopping test); ``ref`` (that loop tidied: the
row's classifier, gradients to the input only, the stopping test without autograd). The option
rows change one classifier setting at a time and time p-fgsm only. p-fgsm runs with
``threshold=1.0`` so that it never stops early; its time is divided by the iterations the engine
reports, and includes the forward pass that judges the saved image after the last step, the
targets and the report (PSNR, SSIM). Rows take turns within each repeat and keep the best time:
the numbers are meant for a quiet machine, and a busy one spoils fewer of them this way.
The process keeps freed memory as ``scenepriv evaluate`` and ``protect --size model`` do
(:mod:`scenepriv.runtime`), for every column alike; ``--default-malloc`` leaves glibc's defaults.
Needs torchattacks, installed without its dependencies (it pins an old requests):
``pip install --no-deps torchattacks==3.5.1``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import scenepriv
from scenepriv.attack import quantise
from scenepriv.methods import image_generators
from scenepriv.runtime import keep_freed_memory
from scenepriv.speed import bf16_is_fast
from scenepriv.targets import draw_uniform, target_mask
from scenepriv.transforms import resize_to_input
from scenepriv.zoo import Classifier
from scenepriv.zoo.places365 import weights_status as places365_weights_status

ROOT = Path(__file__).resolve().parent.parent
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EPS = 0.007


@dataclass(frozen=True)
class Options:
    """The classifier's speed options for one row (the defaults: scenepriv protect's), and its thread count."""

    precision: str = "auto"  # load_classifier's default is fp32
    channels_last: bool = True
    compile: bool = False
    fold_batch_norm: bool = True
    threads: int | None = None  # None: torch's default

    def label(self, device: torch.device) -> str:
        precision = self.precision
        if precision == "auto":
            precision = f"{'bf16' if bf16_is_fast(device.type) else 'fp32'} (auto)"
        parts = ([precision] + ["channels-last"] * self.channels_last + ["folded BN"] * self.fold_batch_norm
                 + ["compile"] * self.compile)
        return "+".join(parts) + (
            f", {self.threads} thread{'s' * (self.threads > 1)}" if self.threads else "")

    def classifier_options(self) -> dict[str, Any]:
        return {"precision": self.precision, "channels_last": self.channels_last, "compile": self.compile,
                "fold_batch_norm": self.fold_batch_norm}


@dataclass
class Row:
    model: str
    options: str
    batch: int
    iterations: int
    pfgsm_ms: float  # per image-iteration
    pfgsm_images_per_s: float
    pfgsm_gflops: float  # useful work (one forward + one backward per image-iteration) per second
    pfgsm_peak_fraction: float  # of the matrix-multiply peak in the row's precision
    pfgsm_peak_mib: float
    warmup_s: float  # first call, untimed: kernel selection, and compilation with compile=True
    reference_ms: float | None = None  # the paper-style loop with this row's classifier
    reference_peak_mib: float | None = None
    paper_ms: float | None = None  # the paper-style loop with the network as published (fp32, NCHW, unfolded)
    bim_ms: float | None = None  # targets given
    bim_peak_mib: float | None = None
    bim_targets_ms: float | None = None  # including the clean classification that draws the targets
    extra: dict[str, Any] = field(default_factory=dict)


# ---- measuring -------------------------------------------------------------------------------


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def timed(function: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """Wall time, peak memory and result of one call."""
    reset_peak_memory(device)
    synchronise(device)
    start = time.perf_counter()
    result = function()
    synchronise(device)
    return time.perf_counter() - start, peak_memory_mib(device), result


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a square matrix multiply: the attainable peak the rows are measured against."""
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    seconds = min(timed(lambda: a @ b, device)[0] for _ in range(repeats))
    return 2 * size**3 / seconds / 1e9


def forward_backward_flops(classifier: Classifier, device: torch.device) -> tuple[int, int]:
    """FLOPs of one forward, and of one forward + backward to the input, for one 224x224 image."""
    x = torch.rand(1, 3, 224, 224, device=device, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        logits = classifier(x)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        logits = classifier(x)
        logits[0, 0].backward()  # autograd.grad is not supported under FlopCounterMode here
    return forward, counter.get_total_flops()


# ---- the three loops ---------------------------------------------------------------------------


def reference_loop(classifier: Classifier, images: torch.Tensor, targets: torch.Tensor, steps: int,
                   threshold: float) -> int:
    """The paper's loop, tidied: one image at a time; a forward and backward pass to the input only, a
    step, then a second forward pass (without autograd) for the stopping test. Returns the iterations."""
    done = 0
    for image, target in zip(images, targets, strict=True):
        x = image[None].clone()
        for _ in range(steps):
            x.requires_grad_(True)
            loss = F.cross_entropy(classifier(x), target[None])
            loss.backward()
            x = (x - EPS * x.grad.sign()).clamp(0, 1).detach()
            done += 1
            with torch.no_grad():
                if classifier(x).softmax(1)[0, target] >= threshold:
                    break
    return done


def paper_loop(published: Classifier, images: torch.Tensor, targets: torch.Tensor, steps: int, threshold: float) -> int:
    """The paper's code as published (smartcameras/P-FGSM), in outline: one image at a time, standardised
    outside the network; the network's parameters keep ``requires_grad`` (it is only put in eval mode), so
    ``loss.backward()`` also computes and accumulates every weight gradient; the stopping test's second
    forward pass runs with autograd on. ``published``: a classifier with the network as published (fp32,
    NCHW, batch norms unfolded), whose parameters are made to require gradients again here. Returns the
    iterations done."""
    network, mean, std = published.network.requires_grad_(True), published.mean, published.std
    done = 0
    for image, target in zip(images, targets, strict=True):
        x = ((image[None] - mean) / std).requires_grad_(True)
        for _ in range(steps):
            x.grad = None
            loss = F.cross_entropy(network(x), target[None])
            loss.backward()
            pixels = (x.detach() * std + mean - EPS * x.grad.sign()).clamp(0, 1)
            x.data = (pixels - mean) / std
            done += 1
            if network(x).softmax(1)[0, target] >= threshold:
                break
    return done


def torchattacks_bim(classifier: Classifier, images: torch.Tensor, targets: torch.Tensor, steps: int) -> int:
    """torchattacks' targeted BIM with our step size and count (eps = 1: the L-inf ball never binds)."""
    import torchattacks

    attack = torchattacks.BIM(classifier, eps=1.0, alpha=EPS, steps=steps)
    attack.set_mode_targeted_by_label(quiet=True)
    attack(images, targets)
    return steps * len(images)


def bim_with_targets(classifier: Classifier, images: torch.Tensor, steps: int, sigma: float = 0.99) -> int:
    """P-FGSM done with torchattacks: the clean classification that draws each target from Eq. 10's set
    (which p-fgsm does in its first forward pass), then targeted BIM."""
    with torch.no_grad():
        probabilities = classifier(images).double().softmax(1)
    mask, _ = target_mask("private", probabilities, sigma)
    return torchattacks_bim(classifier, images, draw_uniform(mask, image_generators(images, 0)), steps)


def pfgsm(classifier: Classifier, images: torch.Tensor, steps: int) -> scenepriv.Protection:
    return scenepriv.protect(images, classifier, "p-fgsm", seed=0, max_iter=steps, threshold=1.0)


# ---- models --------------------------------------------------------------------------------------


def build_classifier(model: str, options: Options, device: torch.device) -> Classifier:
    if model == "resnet50":  # random weights, Places365's 365 outputs: fine for timing
        torch.manual_seed(0)
        network = torchvision.models.resnet50(num_classes=365)
        classifier = Classifier(network, name="resnet50", labels=[f"class {i}" for i in range(365)],
                                mean=IMAGENET_MEAN, std=IMAGENET_STD, **options.classifier_options())
        return classifier.to(device)
    return scenepriv.load_classifier(model, device=device, **options.classifier_options())


def random_photos(count: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (count, 3, 224, 224), generator=generator).float() / 255).to(device)


# ---- the speed run -----------------------------------------------------------------------------


PLAIN = Options(precision="fp32", channels_last=False, fold_batch_norm=False)  # the network as published


def best_of(loops: dict[str, Callable[[], Any]], device: torch.device, repeats: int) -> dict[str, tuple]:
    """Best seconds, peak MiB and last result of each loop. The loops take turns, so that a burst of
    other work on the machine spoils one run of each rather than every run of one."""
    best: dict[str, tuple] = {name: (float("inf"), 0.0, None) for name in loops}
    for _ in range(repeats):
        for name, loop in loops.items():
            seconds, peak, result = timed(loop, device)
            best[name] = (min(seconds, best[name][0]), max(peak, best[name][1]), result)
    return best


def measure_row(model: str, options: Options, batch: int, steps: int, device: torch.device, *, repeats: int,
                peaks: dict[str, float], flops: dict[str, int], plain: dict[str, Classifier], baselines: bool,
                reference_images: int, bim_targets: bool = True) -> Row:
    default_threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        classifier = build_classifier(model, options, device)
        if model not in flops:
            flops[model] = forward_backward_flops(build_classifier(model, PLAIN, device), device)[1]
        images = random_photos(batch, device)
        start = time.perf_counter()
        protection = pfgsm(classifier, images, 1)  # warm-up: kernels for this batch size (and compilation)
        warmup = time.perf_counter() - start
        targets = torch.tensor([record["goal"]["classes"][0]["index"] for record in protection.records], device=device)
        count = min(batch, reference_images)  # one image at a time: its cost does not depend on the batch
        loops: dict[str, Callable[[], Any]] = {"p-fgsm": lambda: pfgsm(classifier, images, steps)}
        if baselines:
            if model not in plain:
                plain[model] = build_classifier(model, PLAIN, device)
            reference_loop(classifier, images[:1], targets[:1], 1, 2.0)  # warm-up at batch size 1
            paper_loop(plain[model], images[:1], targets[:1], 1, 2.0)
            loops["bim"] = lambda: torchattacks_bim(classifier, images, targets, steps)
            if bim_targets:
                loops["bim+targets"] = lambda: bim_with_targets(classifier, images, steps)
            loops["reference"] = lambda: reference_loop(classifier, images[:count], targets[:count], steps, 1.0)
            loops["paper"] = lambda: paper_loop(plain[model], images[:count], targets[:count], steps, 1.0)
        best = best_of(loops, device, repeats)
        seconds, peak, protection = best["p-fgsm"]
        iterations = sum(record["iterations"] for record in protection.records)
        gflops = flops[model] * iterations / seconds / 1e9
        precision = "bf16" if classifier.autocast_dtype(device) is not None else "fp32"
        row = Row(model, options.label(device), batch, steps, 1000 * seconds / iterations, batch / seconds, gflops,
                  gflops / peaks[precision], peak, warmup, extra={"precision": precision})
        if baselines:
            seconds, row.bim_peak_mib, done = best["bim"]
            row.bim_ms = 1000 * seconds / done
            if bim_targets:
                seconds, _, done = best["bim+targets"]
                row.bim_targets_ms = 1000 * seconds / done
            seconds, row.reference_peak_mib, done = best["reference"]
            row.reference_ms = 1000 * seconds / done
            seconds, _, done = best["paper"]
            row.paper_ms = 1000 * seconds / done
        return row
    finally:
        torch.set_num_threads(default_threads)


def speed_plan(args: argparse.Namespace) -> list[tuple[str, Options, int, bool]]:
    """(model, options, batch, with baselines): the fastest fp32 and the fastest options at each batch
    size, then other settings at ``--option-batch``."""
    fp32, fastest = Options(precision="fp32"), Options()  # load_classifier's defaults; scenepriv protect's
    plan = []
    for model in args.models:
        for options in (fp32, fastest):
            plan += [(model, options, batch, True) for batch in args.batch_sizes]
        option_rows = [PLAIN, Options(precision="fp32", fold_batch_norm=False),
                       Options(precision="fp32", channels_last=False), Options(channels_last=False),
                       Options(fold_batch_norm=False)]
        if args.compile:
            option_rows += [Options(precision="fp32", compile=True), Options(compile=True)]
        plan += [(model, options, args.option_batch, False) for options in option_rows]
    return plan


def format_table(rows: list[Row]) -> str:
    def cell(value: float | None, width: int, spec: str = ".1f") -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"

    def ratio(value: float | None, row: Row) -> float | None:
        return None if value is None else value / row.pfgsm_ms

    baselines = [("BIM", "bim_ms"), ("BIM+t", "bim_targets_ms"), ("ref", "reference_ms"), ("paper", "paper_ms")]
    header = (f"{'model':<18} {'classifier':<40} {'batch':>5} {'p-fgsm':>7} "
              + "".join(f"{name:>7} " for name, _ in baselines) + "".join(f"{name + '/p':>8}" for name, _ in baselines)
              + f" {'img/s':>6} {'GFLOP/s':>7} {'peak':>5} {'MiB':>6}")
    lines = [header, f"{'':<65} {'ms per image-iteration':^39} {'ratios to p-fgsm':^32}", "-" * len(header)]
    for row in rows:
        values = [getattr(row, field) for _, field in baselines]
        lines.append(
            f"{row.model:<18} {row.options:<40} {row.batch:>5} {row.pfgsm_ms:>7.1f} "
            + "".join(cell(value, 7) + " " for value in values)
            + "".join(cell(ratio(value, row), 8, ".2f") for value in values)
            + f" {row.pfgsm_images_per_s:>6.2f} {row.pfgsm_gflops:>7.0f} {row.pfgsm_peak_fraction:>5.0%} "
              f"{row.pfgsm_peak_mib:>6.0f}")
    return "\n".join(lines)


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "device": str(device),
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
        "bf16_autocast_native": bf16_is_fast(device.type),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = os.getloadavg()
    return info


def run_speed(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    info = machine(device)
    peaks = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device)}
    print(f"{info['torch']} on {info.get('gpu', info['cpu'])} ({info['cpu_capability']}), "
          f"{info['threads']} threads; matmul 2048^2 peak: fp32 {peaks['fp32']:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s", flush=True)
    flops: dict[str, int] = {}
    plain: dict[str, Classifier] = {}
    rows = []
    for model, options, batch, baselines in speed_plan(args):
        repeats = args.repeats if baselines else args.option_repeats
        row = measure_row(model, options, batch, args.iterations, device, repeats=repeats, peaks=peaks,
                          flops=flops, plain=plain, baselines=baselines,
                          reference_images=args.reference_images, bim_targets=batch == args.option_batch)
        rows.append(row)
        print(format_table([row]).splitlines()[-1], flush=True)
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = os.getloadavg()
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):  # the better of start and end
        peaks[precision] = max(peaks[precision], matmul_peak(dtype, device))
    for row in rows:
        row.pfgsm_peak_fraction = row.pfgsm_gflops / peaks[row.extra["precision"]]
    print()
    print(format_table(rows))
    checks = done_when(rows)
    for line in checks:
        print(line)
    return {"machine": info, "matmul_peak_gflops": peaks, "forward_backward_flops_per_image": flops,
            "rows": [asdict(row) for row in rows], "done_when": checks}


def done_when(rows: list[Row], model: str = "resnet50", batch: int = 16) -> list[str]:
    """The issue's speed criteria, read off the rows of ``model`` at ``batch``."""
    found = {row.options: row for row in rows if row.model == model and row.batch == batch and row.bim_ms}
    fp32 = next((row for label, row in found.items() if label.startswith("fp32")), None)
    default = next((row for label, row in found.items() if "(auto)" in label), None)
    if fp32 is None:
        return []
    lines = [f"{model}, batch {batch}, fp32: paper's code / p-fgsm = {fp32.paper_ms / fp32.pfgsm_ms:.2f} (goal >= 2.5; "
             f"the tidied loop with p-fgsm's classifier: {fp32.reference_ms / fp32.pfgsm_ms:.2f}); BIM / p-fgsm = "
             f"{fp32.bim_targets_ms / fp32.pfgsm_ms:.2f} with its target selection (goal >= 1; with the targets given: "
             f"{fp32.bim_ms / fp32.pfgsm_ms:.2f})"]
    if default is not None and default.options != fp32.options:
        lines.append(f"{model}, batch {batch}, {default.options} vs fp32: {fp32.pfgsm_ms / default.pfgsm_ms:.2f}x "
                     "faster (goal >= 2)")
    return lines


# ---- the quality run ----------------------------------------------------------------------------


def photo_batch(folders: list[Path], device: torch.device) -> tuple[list[str], torch.Tensor]:
    """Every .jpg of the folders (one per file name), bilinearly downsized to 224x224 and rounded to 8 bits."""
    from scenepriv.images import load_photo

    paths = {}
    for folder in folders:
        for path in sorted(folder.glob("*.jpg")):
            paths.setdefault(path.name, path)
    names = sorted(paths)
    images = [resize_to_input(load_photo(paths[name]).pixels[None], (224, 224), "bilinear") for name in names]
    return names, quantise(torch.cat(images)).to(device)


def run_quality(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    folders = [ROOT / "examples" / "photos", *[Path(folder) for folder in args.photos]]
    names, images = photo_batch([folder for folder in folders if folder.is_dir()], device)
    models = ["efficientnet-lite0"]
    if places365_weights_status("resnet50")[1]:
        models.append("resnet50-places365")
    plain = PLAIN
    variants = {"fp32 plain": plain, "fp32": Options(precision="fp32"), "bf16": Options(precision="bf16")}
    print(f"{len(names)} photos at 224x224, seeds {args.seeds}; 'fp32 judge': success judged again on the saved "
          "8-bit images by the plain fp32 classifier (no folding, contiguous)")
    summary = []
    for model in models:
        judge = scenepriv.load_classifier(model, device=device, **plain.classifier_options())
        for variant, options in variants.items():
            classifier = scenepriv.load_classifier(model, device=device, **options.classifier_options())
            records, seconds = [], 0.0
            for seed in args.seeds:
                start = time.perf_counter()
                protection = scenepriv.protect(images, classifier, "p-fgsm", seed=seed)
                seconds += time.perf_counter() - start
                with torch.no_grad():
                    judged = judge(protection.images).double().softmax(1)
                for record, probabilities in zip(protection.records, judged, strict=True):
                    target = record["goal"]["classes"][0]["index"]
                    record["fp32_success"] = bool(probabilities.argmax() == target and probabilities[target] >= 0.99)
                    record["seed"] = seed
                records += protection.records
            count = len(records)
            summary.append({
                "model": model, "variant": variant, "protections": count,
                "success_rate": sum(r["success"] for r in records) / count,
                "fp32_judged_success_rate": sum(r["fp32_success"] for r in records) / count,
                "top1_changed_rate": sum(r["top1_changed"] for r in records) / count,
                "mean_iterations": sum(r["iterations"] for r in records) / count,
                "mean_psnr": sum(r["psnr"] for r in records if r["psnr"] is not None) / count,
                "mean_ssim": sum(r["ssim"] for r in records) / count,
                "seconds": seconds, "targets": [r["goal"]["classes"][0]["index"] for r in records],
            })
    reference_targets = {s["model"]: s["targets"] for s in summary if s["variant"] == "fp32 plain"}
    header = (f"{'model':<20} {'classifier':<20} {'success':>8} {'fp32 judge':>10} {'top-1 chg':>9} "
              f"{'iterations':>10} {'PSNR dB':>8} {'SSIM':>6} {'same target':>11} {'time s':>7}")
    print(header + "\n" + "-" * len(header))
    for s in summary:
        same = sum(a == b for a, b in zip(s["targets"], reference_targets[s["model"]], strict=True)) / s["protections"]
        s["same_target_as_fp32"] = same
        print(f"{s['model']:<20} {s['variant']:<20} {s['success_rate']:>8.1%} {s['fp32_judged_success_rate']:>10.1%} "
              f"{s['top1_changed_rate']:>9.1%} {s['mean_iterations']:>10.2f} {s['mean_psnr']:>8.2f} "
              f"{s['mean_ssim']:>6.4f} {same:>11.0%} {s['seconds']:>7.1f}")
    return {"photos": names, "seeds": args.seeds, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality", action="store_true", help="protect real photos with fp32 and bf16 instead")
    parser.add_argument("--full", action="store_true", help="10 iterations, best of 3, reference on 4 images")
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "resnet50"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 16, 32])
    parser.add_argument("--option-batch", type=int, default=16, help="batch size of the classifier-option rows")
    parser.add_argument("--iterations", type=int, default=5, help="iterations per measurement (default 5)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timed runs (default 2)")
    parser.add_argument("--option-repeats", type=int, default=1, help="the same for the option rows (default 1)")
    parser.add_argument("--reference-images", type=int, default=1,
                        help="images the one-at-a-time reference loops are timed on (default 1)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows (minutes of compiling)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="quality: target seeds")
    parser.add_argument("--photos", nargs="*", default=[],
                        help="quality: more folders of .jpg photos besides examples/photos")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for the whole run")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is, instead of keeping freed memory as the command line does")
    parser.add_argument("--json", type=Path, help="where to write the results (default benchmarks/results*.json)")
    args = parser.parse_args(argv)
    if args.full:
        args.iterations, args.repeats, args.reference_images = max(args.iterations, 10), max(args.repeats, 3), 4
        args.option_repeats = max(args.option_repeats, 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = "glibc malloc, defaults"
    if not args.default_malloc:
        kept = keep_freed_memory()
        allocator = "glibc malloc, freed memory kept (as evaluate runs)" if kept else "system default"
    device = torch.device(args.device)
    print(f"allocator: {allocator}")
    start = time.perf_counter()
    results = run_quality(args, device) if args.quality else run_speed(args, device)
    results["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    results["wall_s"] = time.perf_counter() - start
    results["allocator"] = allocator
    path = args.json or Path(__file__).with_name("quality.json" if args.quality else "results.json")
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwall time {results['wall_s']:.0f} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
