"""What makes a classifier fast on this machine: probes of what the device computes well, batch-norm folding, and
the layers kept out of bf16 where it is slow.

:class:`scenepriv.zoo.Classifier` reads them for its speed options; benchmarks report them.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


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


def fold_batch_norms(network: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of a frozen, eval-mode ``network`` with each BatchNorm2d that reads a Conv2d's output folded into it.

    y = gamma (conv(x) - mean) / sqrt(var + eps) + beta is itself a convolution
    (:func:`torch.nn.utils.fusion.fuse_conv_bn_weights` computes it), so the folded network
    computes the same function (and gradient) with one pass over memory less per layer.
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
            convolution.weight, convolution.bias = fuse_conv_bn_weights(
                convolution.weight, convolution.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight,
                norm.bias)
        parent, _, attribute = names[norm].rpartition(".")
        setattr(folded.get_submodule(parent), attribute, replacement)
    with torch.no_grad():
        actual = folded(example)
    if not torch.allclose(actual, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max().clamp(min=1))):
        warnings.warn("folding batch norms changed the logits; the classifier runs without folding", stacklevel=2)
        return network
    return folded


def depthwise_gradients_in_fp32(network: nn.Module) -> nn.Module:
    """``network``, or a copy whose depthwise convolutions with a stride run in fp32 where a gradient flows through
    them in bf16 on a CPU; every other layer stays in bf16, and passes without a gradient are unchanged.

    oneDNN's bf16 backward of a strided depthwise convolution is 3-10 times slower than its fp32 one (the four of
    EfficientNet-Lite0 took half of a bf16 step's network time; docs/speed.md, "The step and the shrink,
    profiled"), while dense and grouped convolutions and unstrided depthwise ones are faster in bf16.
    """
    def strided_depthwise(module: nn.Module) -> bool:
        return (isinstance(module, nn.Conv2d) and module.groups > 1 and max(module.stride) > 1
                and module.groups == module.in_channels == module.out_channels)

    if not any(strided_depthwise(module) for module in network.modules()):
        return network
    network = copy.deepcopy(network)
    for module in network.modules():
        if strided_depthwise(module):
            module.forward = functools.partial(_in_fp32_under_gradient, module, type(module).forward)
    return network


def _in_fp32_under_gradient(module: nn.Module, forward, x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.requires_grad and torch.is_grad_enabled():
        with torch.autocast("cpu", enabled=False):
            return forward(module, x.float())
    return forward(module, x)
