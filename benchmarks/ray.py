"""Throughput of the Ray backend (scenepriv.distributed) with 1 and 2 workers against the local pipeline, side by
side on the same photos in one run, and what the cluster costs per run and per photo.

    python benchmarks/ray.py                       # examples/photos twice over, default strength (about 6 minutes
                                                   # on 2 CPU cores)
    python benchmarks/ray.py --photos DIR --copies 1 --json ray.json

1. Throughput: the photos protected with the command line's defaults (``--seed 0``) by the local pipeline
   (``pipeline.protect_files``, one process, all cores), then on a local Ray cluster of this machine's cores
   with 1 worker (all cores) and 2 workers (half each). Each time is wall-clock from the call to the last
   result, and includes, on the cluster, starting the workers and loading the model in each; the local time
   excludes its model load (done once before). Outputs are compared byte for byte with the local ones.
2. Overhead: the same photos with a near-empty job (one FGSM step), twice as many photos, locally and on one
   worker: the fixed cost of a cluster run (workers started, model loaded) and the extra seconds per photo
   (planning, scheduling, rows through Ray Data, the report on the driver), from the slope between N and 2N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # this file is named ray.py: `import ray` (here and in Ray's workers) must find the library

import ray  # noqa: E402

from scenepriv import distributed, pipeline  # noqa: E402
from scenepriv.images import find_images  # noqa: E402
from scenepriv.zoo import Models  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def copies_of(photos: Path, copies: int, folder: Path) -> Path:
    """``copies`` copies of each photo under new names (00-a.jpg, 01-a.jpg...): more photos of real content."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(copies):
        for source, _ in find_images([photos]):
            shutil.copy(source, folder / f"{number:02d}-{source.name}")
    return folder


def local_run(folder: Path, out: Path, job: pipeline.Job, models: list) -> tuple[float, dict[str, bytes]]:
    pairs = pipeline.output_pairs(find_images([folder]), out)
    start = time.perf_counter()
    results = list(pipeline.protect_files(pairs, models, job))
    elapsed = time.perf_counter() - start
    return elapsed, {r.output.name: r.output.read_bytes() for r in results if r.record}


def cluster_run(folder: Path, out: Path, job: pipeline.Job, workers: int) -> tuple[float, dict[str, bytes]]:
    pairs = pipeline.output_pairs(find_images([folder]), out)
    start = time.perf_counter()
    results = list(distributed.protect_pairs(pairs, job, cluster=distributed.Cluster(workers=workers)))
    elapsed = time.perf_counter() - start
    return elapsed, {Path(r.output).name: Path(r.output).read_bytes() for r in results if r.record}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=ROOT / "examples" / "photos")
    parser.add_argument("--copies", type=int, default=2, help="copies of each photo (default 2)")
    parser.add_argument("--strength", default=None, help="the --strength of the throughput runs (default: low)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, the best kept (default 2)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    scratch = Path(tempfile.mkdtemp(prefix="scenepriv-ray-bench-"))
    try:
        folder = copies_of(args.photos, args.copies, scratch / "photos")
        double = copies_of(args.photos, 2 * args.copies, scratch / "photos-double")
        photos = len(find_images([folder]))
        strength, settings = pipeline.resolve_settings(strength=args.strength)
        job = pipeline.Job(settings=settings, strength=strength, seed=0, batch_size=args.batch_size)
        _, step = pipeline.resolve_settings("fgsm", iterations=1)
        tiny = pipeline.Job(method="fgsm", settings=step, strength="paper", seed=0, batch_size=args.batch_size)
        load_start = time.perf_counter()
        models = Models().load("full")
        model_load = time.perf_counter() - load_start

        print(f"{photos} photos from {args.photos}, {cores} cores, strength {strength}, batch size {args.batch_size}, "
              f"best of {args.repeats}")
        local_run(args.photos, scratch / "warm-up", tiny, models)  # first-call costs out of the local time
        start = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        cluster_start = time.perf_counter() - start
        seconds: dict[str, float] = {}
        equal: dict[str, bool] = {}
        local_outputs: dict[str, bytes] = {}
        for repeat in range(args.repeats):  # the three take turns: a busy moment of a shared machine spoils one
            for name in ("local", "1 worker", "2 workers"):
                out = scratch / f"{name}-{repeat}".replace(" ", "-")
                if name == "local":
                    elapsed, local_outputs = local_run(folder, out, job, models)
                else:
                    elapsed, outputs = cluster_run(folder, out, job, int(name[0]))
                    equal[name] = equal.get(name, True) and outputs == local_outputs
                seconds[name] = min(seconds.get(name, float("inf")), elapsed)
                print(f"  {name:<10} {elapsed:6.1f} s", flush=True)
        runs = {name: {"seconds": seconds[name], "photos_per_minute": 60 * photos / seconds[name],
                       "throughput_vs_local": seconds["local"] / seconds[name],
                       **({"outputs_equal_local": equal[name]} if name in equal else {})} for name in seconds}
        print(f"{'':<12}{'seconds':>8}{'photos/min':>12}{'vs local':>10}  outputs equal the local ones")
        for name, run in runs.items():
            print(f"{name:<12}{run['seconds']:8.1f}{run['photos_per_minute']:12.1f}{run['throughput_vs_local']:10.2f}"
                  f"  {run.get('outputs_equal_local', '')}")

        tiny_local = {n: local_run(f, scratch / f"tiny-local-{n}", tiny, models)[0]
                      for n, f in ((photos, folder), (2 * photos, double))}
        tiny_ray = {n: cluster_run(f, scratch / f"tiny-ray-{n}", tiny, 1)[0] for n, f in ((photos, folder),
                                                                                            (2 * photos, double))}
        local_slope = (tiny_local[2 * photos] - tiny_local[photos]) / photos
        ray_slope = (tiny_ray[2 * photos] - tiny_ray[photos]) / photos
        fixed = tiny_ray[photos] - ray_slope * photos
        overhead = {"one_step_seconds_per_photo_local": local_slope, "one_step_seconds_per_photo_ray": ray_slope,
                    "extra_seconds_per_photo": ray_slope - local_slope, "fixed_seconds_per_run": fixed,
                    "model_load_seconds": model_load, "ray_init_seconds": cluster_start}
        print(f"one FGSM step per photo   local {local_slope:.3f} s, on 1 worker {ray_slope:.3f} s: "
              f"{ray_slope - local_slope:+.3f} s per photo; fixed cost of a cluster run {fixed:.1f} s "
              f"(ray.init before it: {cluster_start:.1f} s; a model load in this process: {model_load:.1f} s)")
        ray.shutdown()
        results = {"machine": f"{platform.machine()}, {cores} cores", "photos": photos, "strength": strength,
                   "batch_size": args.batch_size, "repeats": args.repeats, "ray": ray.__version__, "runs": runs,
                   "overhead": overhead}
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
