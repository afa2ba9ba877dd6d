"""The paper's methods as named settings of the one loop in :mod:`scenepriv.attack`."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import metrics, targets
from .attack import quantise, sign_step_loop
from .transforms import PlatformViews
from .zoo import Classifier


@dataclass(frozen=True)
class Method:
    """A method of the paper: where its direction comes from and which class it aims at or away from.

    ``target_rule`` is ``"label"`` for the untargeted methods (ascent on the true class, or on the
    clean top-1 when no label is given) and a target-set rule for the targeted ones (descent).
    ``iterative`` methods recompute the gradient every step and stop at the goal; the others repeat
    their first step ``iterations`` times, as the paper's "(kI)" baselines do.
    """

    name: str
    paper_name: str
    direction: str  # "gradient" or "noise" (sign of a standard Gaussian)
    target_rule: str  # "label", "least-likely", "random" or "private"
    iterative: bool

    @property
    def targeted(self) -> bool:
        return self.target_rule != "label"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("sog", "SoG (kI)", "noise", "label", iterative=False),
        Method("fgsm", "FG, FG (kI)", "gradient", "label", iterative=False),
        Method("n-fgsm", "N-FGSM", "gradient", "label", iterative=True),
        Method("l-fgsm", "L-FGSM", "gradient", "least-likely", iterative=True),
        Method("r-fgsm", "R-FGSM, R-FG (kI)", "gradient", "random", iterative=True),
        Method("p-fgsm", "P-FGSM", "gradient", "private", iterative=True),
    )
}


@dataclass(frozen=True)
class Settings:
    """The knobs of every method; defaults are the paper's (Sec. 3.1)."""

    eps: float = 0.007  # step per iteration, in [0, 1] pixel units
    max_iter: int = 50  # iterative methods stop here at the latest
    threshold: float = 0.99  # targeted methods stop once p(target) reaches it on the saved image
    sigma: float = 0.99  # P-FGSM's cumulative-probability threshold (Eq. 10)
    iterations: int | None = None  # fixed-step mode: repeat the first step k times (sog, fgsm, r-fgsm)
    max_perturbation: float | None = None  # optional L-infinity bound around the original
    robust: bool = False  # also hold through random platform re-encodings (JPEG, resizing) while iterating

    def __post_init__(self) -> None:
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.max_iter < 0 or (self.iterations is not None and self.iterations < 0):
            raise ValueError("max_iter and iterations must be >= 0")
        if not 0.0 <= self.threshold <= 1.0 or not 0.0 <= self.sigma <= 1.0:
            raise ValueError("threshold and sigma must lie in [0, 1]")


@dataclass(frozen=True)
class Protection:
    """Protected images (N, 3, H, W), 8-bit values in [0, 1], and one JSON-ready record per image."""

    images: torch.Tensor
    records: list[dict[str, Any]]


def image_generators(images: torch.Tensor, seed: int | None) -> list[torch.Generator]:
    """One random generator per image, independent of the batch it is in.

    With a seed, each image's stream comes from the seed and the image's own pixels, so the same
    photo gets the same target however it is batched. Without one, every stream is seeded from the
    operating system's entropy: a predictable target would let anyone recompute the mapping.
    """
    generators = []
    for image in images:
        if seed is None:
            state = secrets.randbits(63)
        else:
            digest = hashlib.sha256(quantise(image).mul(255).to(torch.uint8).cpu().numpy().tobytes()).digest()
            words = np.frombuffer(digest, dtype=np.uint32).tolist()
            state = int(np.random.SeedSequence([seed, *words]).generate_state(1, np.uint64)[0]) >> 1
        generators.append(torch.Generator().manual_seed(state))
    return generators


def _top(probabilities: torch.Tensor, labels: list[str], k: int = 5) -> list[dict[str, Any]]:
    values, indices = probabilities.topk(min(k, len(probabilities)))
    return [
        {"index": int(i), "name": labels[int(i)], "probability": round(float(v), 6)}
        for v, i in zip(values, indices, strict=True)
    ]


def protect(
    images: torch.Tensor,
    classifier: Classifier,
    method: str = "p-fgsm",
    *,
    labels: torch.Tensor | None = None,
    seed: int | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> Protection:
    """Protect a batch of RGB images in [0, 1], shape (N, 3, H, W), against ``classifier``.

    ``labels`` (N,) are the true classes for the untargeted methods (default: the clean top-1).
    Settings come from ``settings`` and/or keyword overrides (``eps=0.004``, ``sigma=0.9`` ...).
    The input is not modified; the returned images are 8-bit values, exactly what is saved.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    spec = METHODS[method]
    settings = dataclasses.replace(settings or Settings(), **overrides)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    device = next(classifier.parameters()).device
    images = images.to(device)
    generators = image_generators(images, seed)
    fixed_steps = not spec.iterative or (spec.name == "r-fgsm" and settings.iterations is not None)
    steps = (settings.iterations if settings.iterations is not None else 1) if fixed_steps else settings.max_iter
    noise = None
    if spec.direction == "noise":
        noise = torch.stack([torch.randn(images.shape[1:], generator=g) for g in generators])
    fallback = torch.zeros(len(images), dtype=torch.bool)

    def choose_labels(probabilities: torch.Tensor) -> torch.Tensor:
        if not spec.targeted:
            return probabilities.argmax(1) if labels is None else torch.as_tensor(labels, device=device)
        mask, empty = targets.target_mask(spec.target_rule, probabilities, settings.sigma)
        fallback.copy_(empty.cpu())
        return targets.draw_uniform(mask, generators)

    views = None
    if settings.robust:
        view_generator = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed)
        platform = PlatformViews()
        views = lambda saved: platform(saved, classifier.input_size, view_generator)  # noqa: E731
    result = sign_step_loop(
        images, classifier, choose_labels, targeted=spec.targeted, eps=settings.eps, steps=steps,
        early_stop=not fixed_steps, recompute=not fixed_steps, noise=noise, threshold=settings.threshold,
        max_perturbation=settings.max_perturbation, views=views,
    )
    return Protection(result.images, _records(spec, settings, seed, result, classifier.labels, fallback))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8, the pixels as saved."""
    return quantise(images).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _records(spec, settings, seed, result, names, fallback) -> list[dict[str, Any]]:
    clean = result.clean_logits.double().softmax(1).cpu()
    final = result.final_logits.double().softmax(1).cpu()
    ranks = targets.rank_of(clean)
    mass_above = targets.mass_ranked_above(clean)
    originals, protected = to_uint8(result.originals), to_uint8(result.images)
    records = []
    for i in range(len(clean)):
        label = int(result.labels[i])
        record: dict[str, Any] = {
            "method": spec.name,
            "settings": {**dataclasses.asdict(settings), "seed": seed},
            "clean_top5": _top(clean[i], names),
            "target" if spec.targeted else "label": {
                "index": label, "name": names[label], "rank": int(ranks[i, label]),
                "mass_above": round(float(mass_above[i, label]), 6),
            },
            "iterations": int(result.iterations[i]),
            "success": bool(result.success[i]),
            "top1_changed": bool(final[i].argmax() != clean[i].argmax()),
            "final_top5": _top(final[i], names),
        }
        if spec.targeted:
            record["target"]["fallback_least_likely"] = bool(fallback[i])
        linf, l2 = metrics.perturbation_norms(originals[i], protected[i])
        psnr = metrics.psnr(originals[i], protected[i])
        record.update(linf=linf, l2=l2, psnr=None if psnr == float("inf") else psnr,
                      ssim=metrics.ssim(originals[i], protected[i]))
        records.append(record)
    return records
