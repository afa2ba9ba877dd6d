"""The classifier wrapper every attack sees: pixel-space RGB in [0, 1] at any size, logits out."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import shutil
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..settings import PRECISIONS, RESIZE_POLICIES
from ..transforms import resize


@functools.cache
def bf16_is_fast(device_type: str) -> bool:
    """Whether bf16 autocast pays on this kind of device: a GPU with bf16 units, or a CPU with AMX or AVX512-BF16.

    Other CPUs emulate bf16 and run it slower than fp32, so ``precision="auto"`` keeps fp32 there.
    """
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.3 has no emulation flag and answers for native support
            return torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
        return torch.backends.mkldnn.is_available() and any(probe() for probe in probes if probe is not None)
    return False


@functools.cache
def compile_problem(device_type: str) -> str | None:
    """Why ``torch.compile`` cannot run here on ``device_type`` (one line), or None when it can."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported by this Python or platform"
    if device_type == "cpu":
        import torch._inductor.config as inductor

        candidates = [os.environ.get("CXX"), *inductor.cpp.cxx, "c++"]
        if not any(shutil.which(name) for name in candidates if name):
            return "torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH"
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "torch.compile on CUDA needs the triton package"
    return None


def resize_to_input(x: torch.Tensor, size: tuple[int, int], policy: str) -> torch.Tensor:
    """Differentiably bring a batch (N, 3, H, W) to the model's input size.

    ``bilinear`` is the paper's setting (the whole image downsized bilinearly, no crop);
    ``bilinear-antialias``, ``bicubic`` and ``area`` are the other resamplers of
    :mod:`scenepriv.transforms`; ``resize-crop`` is torchvision's evaluation transform (short side
    to 256/224 of the input size, antialiased bilinear, then a centre crop).
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; choose one of {', '.join(RESIZE_POLICIES)}")
    if policy != "resize-crop":
        return resize(x, size, policy)
    height, width = size
    scale = round(min(height, width) * 256 / 224) / min(x.shape[-2:])
    resized = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
    x = resize(x, resized, "bilinear-antialias")
    top, left = (resized[0] - height) // 2, (resized[1] - width) // 2
    return x[..., top : top + height, left : left + width]


def fold_batch_norms(network: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of a frozen, eval-mode ``network`` with each BatchNorm2d that reads a Conv2d's output folded into it.

    y = gamma (conv(x) - mean) / sqrt(var + eps) + beta is itself a convolution, so the folded
    network computes the same function (and gradient) with one pass over memory less per layer.
    The pairs are found by running ``example`` once; the copy is kept only if its logits match.
    timm's BatchNormAct2d (norm, dropout, activation) keeps its dropout and activation.
    """
    producers: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def after_convolution(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        producers[id(output)] = (module, output)  # the output is kept, so its id is not reused

    def before_norm(module: nn.Module, inputs: tuple) -> None:
        if id(inputs[0]) in producers:
            pairs.append((producers[id(inputs[0])][0], module))

    folded = copy.deepcopy(network)
    hooks = [m.register_forward_hook(after_convolution) for m in folded.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(before_norm) for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        expected = folded(example)
    for hook in hooks:
        hook.remove()
    producers.clear()
    names = {module: name for name, module in folded.named_modules()}
    for convolution, norm in pairs:
        if type(norm) is nn.BatchNorm2d:
            replacement: nn.Module = nn.Identity()
        elif type(norm).__name__ == "BatchNormAct2d":
            replacement = nn.Sequential(norm.drop, norm.act)
        else:
            continue
        with torch.no_grad():
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            bias = norm.running_mean * 0 if convolution.bias is None else convolution.bias
            convolution.weight.mul_(scale.view(-1, 1, 1, 1))
            convolution.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias, requires_grad=False)
        parent, _, attribute = names[norm].rpartition(".")
        setattr(folded.get_submodule(parent), attribute, replacement)
    with torch.no_grad():
        actual = folded(example)
    if not torch.allclose(actual, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max().clamp(min=1))):
        warnings.warn("folding batch norms changed the logits; the classifier runs without folding", stacklevel=2)
        return network
    return folded


class Classifier(nn.Module):
    """A frozen image classifier in pixel space: resizing and normalisation happen inside.

    Input: float RGB batches in [0, 1], shape (N, 3, H, W), any H and W. Output: logits (float32
    or the network's own dtype, never bf16). Parameters never require gradients, so attacks
    differentiate with respect to the input only.

    Speed options (each leaves the interface unchanged):
    ``precision`` ``"fp32"`` runs the network as built; ``"bf16"`` runs it under bf16 autocast
    (only the sign of the gradient is used, which tolerates low precision); ``"auto"`` picks bf16
    where the device computes it natively (:func:`bf16_is_fast`) and fp32 elsewhere.
    ``channels_last`` stores weights and activations as NHWC, the layout oneDNN and cuDNN prefer.
    ``compile`` runs normalisation and network through ``torch.compile`` (slow first call).
    ``fold_batch_norm`` folds batch norms into the convolutions before them (the same function,
    fewer passes over memory; see :func:`fold_batch_norms`); ``network`` then holds the folded
    copy, whose state dict differs from the checkpoint's.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        name: str,
        labels: Sequence[str],
        input_size: tuple[int, int] = (224, 224),
        mean: Sequence[float],
        std: Sequence[float],
        resize: str = "bilinear",
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        fold_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if resize not in RESIZE_POLICIES:
            raise ValueError(f"unknown resize policy {resize!r}; choose one of {', '.join(RESIZE_POLICIES)}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        for option, value in (("channels_last", channels_last), ("compile", compile),
                              ("fold_batch_norm", fold_batch_norm)):
            if not isinstance(value, bool):
                raise TypeError(f"{option} must be True or False, got {value!r}")
        self.network = network.eval().requires_grad_(False)
        if fold_batch_norm and any(isinstance(m, nn.BatchNorm2d) for m in network.modules()):
            parameter = next(network.parameters())
            example = torch.randn(1, 3, *input_size, generator=torch.Generator().manual_seed(0))
            self.network = fold_batch_norms(self.network, example.to(parameter.device, parameter.dtype))
        if channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.name = name
        self.labels = list(labels)
        self.input_size = tuple(input_size)
        self.resize = resize
        self.precision = precision
        self.channels_last = channels_last
        self.compiled = compile  # not `compile`: that is nn.Module's own method
        self.fold_batch_norm = fold_batch_norm
        self._compiled_logits: Callable[[torch.Tensor, torch.dtype | None], torch.Tensor] | None = None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        """Where the network's weights are, and so where images must be."""
        return self.mean.device

    def train(self, mode: bool = True) -> Classifier:
        """Stay in evaluation mode: batch-norm statistics must never change under an attack."""
        return super().train(False)

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The low precision the network runs in on ``device`` (None: as built)."""
        if self.precision == "bf16" or (self.precision == "auto" and bf16_is_fast(device.type)):
            return torch.bfloat16
        return None

    def _logits(self, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        context = contextlib.nullcontext() if dtype is None else torch.autocast(x.device.type, dtype=dtype)
        with context:
            logits = self.network(x)
        return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_to_input(images, self.input_size, self.resize)
        dtype = self.autocast_dtype(x.device)
        if not self.compiled:
            return self._logits(x, dtype)
        if problem := compile_problem(x.device.type):
            raise RuntimeError(f"compile=True: {problem}; load the classifier with compile=False")
        if self._compiled_logits is None:
            self._compiled_logits = torch.compile(self._logits)
        return self._compiled_logits(x, dtype)
