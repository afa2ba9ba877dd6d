"""What a user chooses, as plain values without PyTorch: the methods of the paper, their settings,
and the names of resamplers and precisions. The command line reads them without importing torch."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

# The common ways to shrink an image: torch's bilinear with and without antialiasing (the latter is
# the paper's), bicubic with antialiasing (what Pillow and most platforms use) and area averaging.
RESAMPLERS = ("bilinear", "bilinear-antialias", "bicubic", "area")
# How a classifier brings a photo to its input size: a resampler, or torchvision's resize and centre crop.
RESIZE_POLICIES = (*RESAMPLERS, "resize-crop")
PRECISIONS = ("fp32", "bf16", "auto")


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
    texture_mask: float | None = None  # c of the perceptual mask s / (s + c) on each pixel's step; None: uniform

    def __post_init__(self) -> None:
        """Refuse values that would silently produce a broken photo (a NaN step, a negative bound)."""
        for name in ("eps", "threshold", "sigma", "max_perturbation", "texture_mask", "max_iter", "iterations"):
            value = getattr(self, name)
            whole = name in ("max_iter", "iterations")
            if value is None and name in ("max_perturbation", "texture_mask", "iterations"):
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral if whole else numbers.Real):
                raise ValueError(f"{name} must be a {'whole number' if whole else 'number'}, got {value!r}")
            if not (0 <= value if whole else 0.0 <= value <= 1.0):  # False for NaN
                raise ValueError(f"{name} must be {'>= 0' if whole else 'in [0, 1]'}, got {value!r}")
