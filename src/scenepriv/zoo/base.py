"""The classifier wrapper every attack sees: pixel-space RGB in [0, 1] at any size, logits out."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..settings import PRECISIONS, RESIZE_POLICIES
from ..speed import bf16_is_fast, compile_problem, depthwise_gradients_in_fp32, fold_batch_norms
from ..transforms import resize_to_input


class Classifier(nn.Module):
    """A frozen image classifier in pixel space: resizing and normalisation happen inside.

    Input: float RGB batches in [0, 1], shape (N, 3, H, W), any H and W. Output: logits (float32
    or the network's own dtype, never bf16). Parameters never require gradients, so attacks
    differentiate with respect to the input only.

    Speed options (each leaves the interface unchanged):
    ``precision`` ``"fp32"`` runs the network as built; ``"bf16"`` runs it under bf16 autocast
    (only the sign of the gradient is used, which tolerates low precision); ``"auto"`` picks bf16
    where the device computes it natively (:func:`scenepriv.speed.bf16_is_fast`) and fp32 elsewhere; under bf16 on a
    CPU, the gradient of strided depthwise convolutions is computed in fp32
    (:func:`scenepriv.speed.depthwise_gradients_in_fp32`).
    ``channels_last`` stores weights and activations as NHWC, the layout oneDNN and cuDNN prefer.
    ``compile`` runs normalisation and network through ``torch.compile`` (slow first call).
    ``fold_batch_norm`` folds batch norms into the convolutions before them (the same function,
    fewer passes over memory; see :func:`scenepriv.speed.fold_batch_norms`); ``network`` then
    holds the folded copy, whose state dict differs from the checkpoint's.
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
        if precision != "fp32":
            self.network = depthwise_gradients_in_fp32(self.network)
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

    def exact(self, images: torch.Tensor) -> torch.Tensor:
        """The logits in the network's own precision, without autocast or compilation: what a platform running the
        published network computes, so what a verdict on a saved photo is judged by."""
        return self._logits(resize_to_input(images, self.input_size, self.resize), None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._network_logits(resize_to_input(images, self.input_size, self.resize))

    def forward_many(self, batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The logits of each batch, as :meth:`forward` gives them, from one pass of the network over all of them
        together (one pass over a batch of three images costs about three quarters of three passes on a CPU). Hooks
        on ``network`` see that pass; hooks on the Classifier itself, which only ``forward`` calls, do not."""
        inputs = [resize_to_input(images, self.input_size, self.resize) for images in batches]
        return list(self._network_logits(torch.cat(inputs)).split([len(x) for x in inputs]))

    def _network_logits(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.autocast_dtype(x.device)
        if not self.compiled:
            return self._logits(x, dtype)
        if problem := compile_problem(x.device.type):
            raise RuntimeError(f"compile=True: {problem}; load the classifier with compile=False")
        if self._compiled_logits is None:
            self._compiled_logits = torch.compile(self._logits)
        return self._compiled_logits(x, dtype)
