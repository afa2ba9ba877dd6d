"""A bf16 step with the gradients of strided depthwise convolutions in fp32 (what scenepriv does) against in bf16.

    python benchmarks/depthwise.py [--models efficientnet-lite0,efficientnet-lite1,efficientnet-lite2]
        [--batches 3,16] [--threads 1,2] [--repeat 5]

One step is what the loop does per iteration: a forward pass of a batch of 224-px images under bf16 autocast and the
gradient with respect to the input. Per model, batch size and thread count, the two kinds of step take turns
(``--repeat`` times each, the fastest kept) on the same classifier (:func:`scenepriv.load_classifier`, precision
bf16), so both see the same load on a shared machine; the ratio is what matters. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch

import scenepriv


def step_time(classifier, batch: torch.Tensor) -> float:
    """Seconds of one forward pass and input gradient."""
    start = time.perf_counter()
    x = batch.clone().requires_grad_(True)
    torch.autograd.grad(classifier(x).logsumexp(1).sum(), x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet-lite0,efficientnet-lite1,efficientnet-lite2")
    parser.add_argument("--batches", default="3,16")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("| model | batch | threads | depthwise gradients in bf16 | in fp32 (scenepriv) | fp32 / bf16 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        classifier = scenepriv.load_classifier(name, precision="bf16")
        patched = [module for module in classifier.network.modules() if "forward" in vars(module)]
        own = [vars(module)["forward"] for module in patched]
        for size in map(int, args.batches.split(",")):
            batch = torch.rand(size, 3, *classifier.input_size, generator=torch.Generator().manual_seed(0))
            for threads in map(int, args.threads.split(",")):
                torch.set_num_threads(threads)
                best = {"bf16": float("inf"), "fp32": float("inf")}
                for _ in range(args.repeat + 1):  # the first round warms up and is kept only if fastest
                    for kind in best:
                        for module, forward in zip(patched, own, strict=True):
                            if kind == "fp32":
                                module.forward = forward
                            else:
                                vars(module).pop("forward", None)
                        best[kind] = min(best[kind], step_time(classifier, batch))
                print(f"| {name} | {size} | {threads} | {best['bf16'] * 1000:.0f} ms | {best['fp32'] * 1000:.0f} ms "
                      f"| {best['fp32'] / best['bf16']:.2f} |")


if __name__ == "__main__":
    main()
