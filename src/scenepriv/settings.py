"""What a user chooses, as plain values without PyTorch: the methods of the paper, their settings,
the names of resamplers and precisions, and the error a user can cause. The command line reads them
without importing torch."""

from __future__ import annotations

import numbers
from dataclasses import dataclass


class ScenePrivError(Exception):
    """A problem a user can cause or fix (a bad file, missing weights, a wrong option): its message is one line
    that says what and where, so the command line shows that line and no traceback. Bugs raise anything else."""


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
    clean top-1 when no label is given), a target-set rule for the targeted ones (descent), or
    ``"away"``: descent on the probability of the classes the photo likely shows (not in the paper).
    ``iterative`` methods recompute the gradient every step and stop at the goal. ``repeatable``
    methods take ``iterations`` = k: their first step repeated k times, the paper's "(kI)" baselines
    (for the methods that are not iterative, k is 1 unless given).
    """

    name: str
    direction: str  # "gradient" or "noise" (sign of a standard Gaussian)
    target_rule: str  # "label", "least-likely", "random", "private" or "away"
    iterative: bool
    repeatable: bool = False

    @property
    def targeted(self) -> bool:
        return self.target_rule != "label"

    def fixed_steps(self, iterations: int | None) -> int | None:
        """The number of repeated first steps for ``iterations`` (None: iterate to the goal), or ValueError."""
        if iterations is not None and not self.repeatable:
            raise ValueError(f"{self.name} iterates until its goal (max_iter); iterations=k applies to sog, fgsm "
                             "and r-fgsm only")
        if not self.iterative:
            return 1 if iterations is None else iterations
        return iterations


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("sog", "noise", "label", iterative=False, repeatable=True),  # SoG (kI)
        Method("fgsm", "gradient", "label", iterative=False, repeatable=True),  # FG, FG (kI)
        Method("n-fgsm", "gradient", "label", iterative=True),
        Method("l-fgsm", "gradient", "least-likely", iterative=True),
        Method("r-fgsm", "gradient", "random", iterative=True, repeatable=True),  # R-FGSM, R-FG (kI)
        Method("p-fgsm", "gradient", "private", iterative=True),
        Method("away", "gradient", "away", iterative=True),  # away from the likely classes (not in the paper)
    )
}


@dataclass(frozen=True)
class Settings:
    """The knobs of every method; defaults are the paper's (Sec. 3.1)."""

    eps: float = 0.007  # step per iteration, in [0, 1] pixel units
    max_iter: int = 50  # iterative methods stop here at the latest
    threshold: float = 0.99  # targeted methods stop once p(target) reaches it on the saved image (away: p outside)
    sigma: float = 0.99  # P-FGSM's cumulative-probability threshold (Eq. 10)
    iterations: int | None = None  # fixed-step mode: repeat the first step k times (sog, fgsm, r-fgsm)
    max_perturbation: float | None = None  # optional L-infinity bound around the original
    robust: bool = False  # also hold through random platform re-encodings (JPEG, resizing) while iterating
    robust_quality: int = 25  # with robust: the lowest JPEG quality of those re-encodings (the harshest view's)
    robust_views: int = 2  # with robust: how many of those re-encodings join each gradient (the first the harshest)
    texture_mask: float | None = None  # c of the perceptual mask w = s / (s + c) on each pixel's step; None: uniform
    texture_budget: float | None = None  # with the mask: |x - x_original| <= budget * w, per pixel
    budget_growth: int | None = None  # the budget of an image still going widens by its first size this often
    # an image that reaches its goal with that budget widened 3 times or more tries again (for budget_growth steps)
    # within one size less, up to this many times; where it does not reach it there, the last state that did stays
    tighten: int | None = None
    # Transfer to classifiers not protected against (None: off, the paper's plain sign steps):
    diversity: int | None = None  # input diversity: this many randomly shrunk and shifted views join each gradient
    diversity_scale: float = 0.8  # each view of ``diversity`` shrinks the image by a factor in [this, 1]
    momentum: float | None = None  # mu of MI-FGSM: step along the sign of the accumulated normalised gradients
    smoothing: float | None = None  # sigma (pixels of the classifier's input) of a Gaussian over each gradient (TI)
    min_iter: int | None = None  # iterative methods go on this long even once the goal is reached (a margin)
    # Once an image reaches its goal, scale its perturbation down by the smallest factor in (0, 1] that still
    # reaches it (and with robust still holds on the real re-encodings), found by this many halvings; None: off
    shrink: int | None = None
    # Then, where butteraugli scores the photo as saved above this (and is installed), ease the change where the eye
    # sees it most, as long as the goal still holds (scenepriv.methods); None: off
    ease_above: float | None = None
    # Compute the change on the photo shrunk by a whole factor to about this many px on its long side, then carry
    # it to full size (scenepriv.resolution); None: at full size
    work_size: int | None = None

    def __post_init__(self) -> None:
        """Refuse values that would silently produce a broken photo (a NaN step, a negative bound)."""
        optional = ("max_perturbation", "texture_mask", "texture_budget", "iterations", "budget_growth", "tighten",
                    "diversity", "momentum", "smoothing", "min_iter", "shrink", "work_size", "ease_above")
        for name in ("eps", "threshold", "sigma", "max_perturbation", "texture_mask", "texture_budget", "max_iter",
                     "iterations", "budget_growth", "tighten", "diversity", "diversity_scale", "momentum", "smoothing",
                     "min_iter", "robust_quality", "robust_views", "shrink", "work_size", "ease_above"):
            value = getattr(self, name)
            whole = name in ("max_iter", "iterations", "budget_growth", "tighten", "diversity", "min_iter",
                             "robust_quality", "robust_views", "shrink", "work_size")
            if name in ("smoothing", "ease_above") and value is not None:  # pixels, a score: any size above 0
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
                    raise ValueError(f"{name} must be a number > 0, got {value!r}")
                continue
            if value is None and name in optional:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral if whole else numbers.Real):
                raise ValueError(f"{name} must be a {'whole number' if whole else 'number'}, got {value!r}")
            if not (0 <= value if whole else 0.0 <= value <= 1.0):  # False for NaN
                raise ValueError(f"{name} must be {'>= 0' if whole else 'in [0, 1]'}, got {value!r}")
        if self.texture_budget is not None and self.texture_mask is None:
            raise ValueError("texture_budget bounds the perturbation by the texture mask: set texture_mask too")
        if self.budget_growth is not None and self.texture_budget is None and self.max_perturbation is None:
            raise ValueError("budget_growth widens a bound: set texture_budget or max_perturbation too")
        if self.tighten == 0:
            raise ValueError("tighten takes at least 1 try (None: off)")
        if self.tighten is not None and self.budget_growth is None:
            raise ValueError("tighten narrows a widened bound again: set budget_growth too")
        if not 1 <= self.robust_quality <= 100:
            raise ValueError(f"robust_quality is a JPEG quality in [1, 100], got {self.robust_quality!r}")
        if self.robust_views == 0:
            raise ValueError("robust_views takes at least 1 re-encoding per step")
        if self.work_size == 0:
            raise ValueError("work_size is a number of pixels >= 1 (None: full size)")
        if self.diversity == 0 or self.diversity_scale == 0:
            raise ValueError("diversity takes at least 1 view with diversity_scale above 0 (None: no views)")
        if self.texture_budget is not None and self.max_perturbation is not None:
            raise ValueError("set one bound: texture_budget (per pixel, by the texture mask) or max_perturbation")


# The strength used when none is named: it holds through a platform's re-encoding (docs/strength.md).
DEFAULT_STRENGTH = "medium"


@dataclass(frozen=True)
class Strength:
    """A named preset: its settings, what it is for in words (the help, the web page and the README show them), and
    the re-encodings it is confirmed to hold through (what ``scenepriv verify`` checks by default for it): every
    combination of ``jpeg`` qualities (and the file as saved) and ``scales``, through every resampler when
    ``all_resamplers``, else through the resize of the classifier protected against. ``lossless``: its outputs
    are PNGs unless a format is asked for (a JPEG's own loss would show more than the change)."""

    settings: dict
    promise: str
    jpeg: tuple[int, ...] = ()
    scales: tuple[float, ...] = (1.0,)
    all_resamplers: bool = False
    lossless: bool = False


# Named sets of settings for full-size photos, from measurements on real photos (docs/strength.md): how
# visible the protection may be against how much re-encoding it survives. Options given beside one win.
PRESETS: dict[str, Strength] = {
    # least visible: each step 0.5/255 weighted by local texture, each pixel within 1/255 x its weight, that
    # bound widening by 1/255 every 20 iterations while an image needs more; stops once the target leads at 0.5
    "low": Strength(
        {"eps": 0.5 / 255, "texture_mask": 0.02, "texture_budget": 1 / 255, "budget_growth": 20, "threshold": 0.5,
         "max_iter": 200},
        "least visible; holds on the file as saved (a PNG), for the classifier protected against (with its own "
        "resize), not through a site's re-encoding: for files shared as they are", lossless=True),
    # steps of 2/255 weighted by texture within 2/255 x the weight, that bound widening every 10 iterations,
    # through two platform re-encodings per step (resizing, JPEG 50-95; random, the second, once a real one refused
    # the photo, that one), stopping only once the file and its real JPEG 50, 75 and 95 re-encodings hold at full
    # and half size; a photo that needed its bound widened 3 times or more then tries again within one size less
    # (10 steps), twice at most; then scaled down as far as that still holds (3 halvings: by 1/8 or more; two more
    # cost a sixth of the run and moved factors by 1/16-1/32); photos of 2000 px or more worked on at half size
    # (scenepriv.resolution)
    "medium": Strength(
        {"eps": 2 / 255, "texture_mask": 0.02, "texture_budget": 2 / 255, "budget_growth": 10, "tighten": 2,
         "threshold": 0.5, "max_iter": 100, "robust": True, "robust_quality": 50, "shrink": 3, "ease_above": 3.0,
         "work_size": 2000},
        "the default: hardly visible; holds on the file as saved and after a site's JPEG re-encoding (quality "
        "50-95) at full and half size, whatever the resize",
        jpeg=(50, 75, 95), scales=(0.5, 1.0), all_resamplers=True),
    # uniform steps of one grey level, the paper's stopping rule (p >= 0.99), through re-encodings down to JPEG 25
    "high": Strength(
        {"eps": 1 / 255, "robust": True, "work_size": 2000},
        "the surest: as medium, more often also through harsher JPEG (quality 25), and visible",
        jpeg=(50, 75, 95), scales=(0.5, 1.0), all_resamplers=True),
    # the paper's P-FGSM as published (Sec. 3.1): uniform steps of 0.007, p >= 0.99, up to 50 iterations
    "paper": Strength({}, "the paper's P-FGSM settings, for comparisons (the default with --size model and for "
                          "methods other than p-fgsm)"),
    # for classifiers not protected against (with --model a,b): 200 steps of 1/255 x w (a mask that leaves flat
    # regions some of the step) within 6/255 x w, whether or not the target already leads, gradients that also see
    # two randomly shrunk and shifted views of the photo (input diversity); a photo whose target does not lead with
    # p >= 0.5 by then goes on, its bound doubled, up to 400. Of the settings tried on real photos, the one that
    # changed the held-out judge most often at the least visibility (docs/transfer.md)
    "transfer": Strength(
        {"eps": 1 / 255, "texture_mask": 0.005, "texture_budget": 6 / 255, "budget_growth": 200, "min_iter": 200,
         "max_iter": 400, "threshold": 0.5, "diversity": 2, "work_size": 2000},
        "more often fools classifiers other than those protected against (with --model a,b); visible, slower"),
}
STRENGTHS: dict[str, dict] = {name: preset.settings for name, preset in PRESETS.items()}  # the settings alone
