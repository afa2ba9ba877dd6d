"""The measurement of docs/transfer-surrogates.md in one run: train every surrogate variant, then measure the frontier.

    python benchmarks/surrogate_campaign.py --corpus CORPUS --tuning TUNING --heldout HELDOUT --out OUT \\
        --base-weights 0=lite0.pth,1=lite1.pth,2=lite2.pth --device cuda --workers 10 --deadline 440
    python benchmarks/surrogate_campaign.py --smoke --out /tmp/campaign      # the plan on the CPU, in minutes

1. Trains each variant of ``VARIANTS`` from EfficientNet-Lite0 and from Lite1 (tools/train_surrogate.py, in
   parallel), with step counts sized for the project's 2-core CPU (about an hour or less each).
2. Measures (benchmarks/frontier.py, ``--workers`` at a time, in this order):
   the held-out photos at ``transfer`` against each variant's Lite0 + Lite1, judged by Lite2;
   the selection proxy on the tuning photos: each variant's Lite0 alone judged by the stock Lite1, and its
   Lite1 alone judged by the stock Lite0 (Lite2 takes no part in choosing a surrogate);
   the held-out photos at ``transfer-3`` and at ``medium``.
Everything goes to OUT as it is measured: ``results.jsonl`` (training summaries and one line per photo),
``log.txt``, and the surrogate files (the largest collections each alone, the rest in ``others.tar``), each
written as soon as it is trained, within the limits of what a GPU lease returns (8 files, 16 MiB each, 64 MiB).
At ``--deadline`` seconds the measurements still running are stopped, so the run ends with what it has.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "tools" / "train_surrogate.py"
FRONTIER = ROOT / "benchmarks" / "frontier.py"
BASES = {"lite0": "efficientnet-lite0", "lite1": "efficientnet-lite1"}
# name -> training options. The steps were sized for about an hour each on the project's 2-core CPU from a timing
# taken under load; docs/transfer-surrogates.md has the seconds per step measured later (by those, lgv-long is
# Lite0's hour, the others a third to two thirds of it).
VARIANTS: dict[str, list[str]] = {
    "lgv": ["--method", "lgv", "--steps", "256", "--snapshots", "4", "--lr", "0.01"],
    "robust": ["--method", "robust", "--steps", "96", "--epsilon", "0.5", "--attack-steps", "2", "--lr", "0.002"],
    "sam": ["--method", "sam", "--steps", "128", "--rho", "0.1", "--lr", "0.002"],
    "lgv-robust": ["--method", "lgv-robust", "--steps", "96", "--snapshots", "4", "--epsilon", "0.5",
                   "--attack-steps", "2", "--lr", "0.01"],
    # four times lgv's steps: what more than an hour of CPU would buy (not a recipe for the CPU)
    "lgv-long": ["--method", "lgv", "--steps", "1024", "--snapshots", "4", "--lr", "0.01"],
}
MAIN = ["lgv", "robust", "sam", "lgv-robust"]  # measured first; lgv-long last
RETURNED_ALONE = ["lgv", "lgv-robust"]  # their files come back one by one; robust and sam in others.tar
LIMIT_BYTES, FILE_LIMIT_BYTES = 62 * 2**20, 16 * 2**20


class Campaign:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.weights = self.out / "weights" if args.keep_weights_in_out else Path(args.work) / "weights"
        self.weights.mkdir(parents=True, exist_ok=True)
        self.results = self.out / "results.jsonl"
        self.log_file = (self.out / "log.txt").open("a", encoding="utf-8")
        self.start = time.monotonic()
        self.processes: set[subprocess.Popen] = set()

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.start:7.1f}s] {text}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def left(self) -> float:
        return self.args.deadline - (time.monotonic() - self.start)

    def call(self, command: list[str], name: str) -> bool:
        """Run ``command`` until it ends or the deadline passes; its output goes to the log."""
        if self.left() <= 5:
            self.log(f"skipped (deadline): {name}")
            return False
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.processes.add(process)
        try:
            output, _ = process.communicate(timeout=max(1.0, self.left()))
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            self.log(f"stopped at the deadline: {name}")
        self.processes.discard(process)
        tail = "\n".join(line for line in output.splitlines() if not line.startswith("{"))[-1500:]
        self.log(f"{name}: exit {process.returncode} after {time.monotonic() - started:.1f}s" +
                 (f"\n{tail}" if process.returncode else ""))
        return process.returncode == 0

    def train(self, variant: str, base: str) -> None:
        args = self.args
        command = [sys.executable, str(TRAIN), "--base", BASES[base], "--corpus", str(args.corpus),
                   "--out", str(self.weights / f"{variant}-{base}.npz"), "--device", args.device,
                   "--precision", args.train_precision, "--log", str(self.results), "--seed", str(args.seed),
                   *VARIANTS[variant]]
        if args.base_weights.get(base[-1]):
            command += ["--base-weights", args.base_weights[base[-1]]]
        if args.threads:
            command += ["--threads", str(args.threads)]
        if args.smoke:
            command += ["--smoke"]
        self.call(command, f"train {variant} {base}")

    def frontier(self, photos: Path, label: str, models: list[str], setting: str, judge: str) -> None:
        args = self.args
        command = [sys.executable, str(FRONTIER), str(photos), "--surrogate", f"{label}={','.join(models)}",
                   "--setting", setting, "--judge", judge, "--device", args.device, "--precision", args.precision,
                   "--json", str(self.results), "--seed", str(args.seed),
                   "--base-weights", ",".join(f"{k}={v}" for k, v in args.base_weights.items())]
        if args.smoke:
            command += ["--smoke", "--limit", "1"]
        self.call(command, f"frontier {photos.name} {label} {setting} judge={judge}")

    def model(self, variant: str, base: str) -> str:
        """The ``--surrogate`` member for ``variant`` of ``base`` (stock: the zoo model with the carried weights)."""
        if variant == "stock":
            weights = self.args.base_weights.get(base[-1])
            return BASES[base] + (f"@{weights}" if weights else "")
        return str(self.weights / f"{variant}-{base}.npz")

    def judge(self, variant: int) -> str:
        weights = self.args.base_weights.get(str(variant))
        return f"efficientnet-lite{variant}" + (f"@{weights}" if weights else "")

    def copy_back(self) -> None:
        """The trained files into OUT within the lease's limits: LGV collections alone, the rest in one tar."""
        used = sum(p.stat().st_size for p in self.out.iterdir() if p.is_file())
        for variant in RETURNED_ALONE:
            for base in BASES:
                source = self.weights / f"{variant}-{base}.npz"
                target = self.out / source.name
                if source.is_file() and not target.exists():
                    size = source.stat().st_size
                    if size <= FILE_LIMIT_BYTES and used + size <= LIMIT_BYTES:
                        shutil.copy(source, target)
                        used += size
                    else:
                        self.log(f"not returned (size {size}): {source.name}")
        others = [p for p in sorted(self.weights.glob("*.npz")) if not p.name.startswith("lgv-long")
                  and not any(p.name.startswith(f"{v}-lite") for v in RETURNED_ALONE)]
        if others:
            with tarfile.open(self.out / "others.tar.part", "w") as tar:
                for path in others:
                    tar.add(path, arcname=path.name)
            size = (self.out / "others.tar.part").stat().st_size
            if size <= FILE_LIMIT_BYTES and used + size <= LIMIT_BYTES:
                os.replace(self.out / "others.tar.part", self.out / "others.tar")
            else:
                (self.out / "others.tar.part").unlink()
                self.log(f"others.tar not returned (size {size})")

    def run(self) -> None:
        args = self.args
        variants = MAIN + ([] if args.smoke else ["lgv-long"])
        self.log(f"plan: variants {variants}, device {args.device}, workers {args.workers}, deadline {args.deadline}s")
        with ThreadPoolExecutor(args.train_workers) as pool:
            list(pool.map(lambda job: self.train(*job), [(v, b) for v in variants for b in BASES]))
        self.copy_back()
        self.log("training done")
        everyone = ["stock", *variants]
        jobs = []
        main = ["stock", *MAIN]
        jobs += [(args.heldout, v, [self.model(v, "lite0"), self.model(v, "lite1")], "transfer", self.judge(2))
                 for v in main]
        for v in main:
            jobs.append((args.tuning, f"{v}-lite0", [self.model(v, "lite0")], "transfer", self.judge(1)))
            jobs.append((args.tuning, f"{v}-lite1", [self.model(v, "lite1")], "transfer", self.judge(0)))
        jobs += [(args.heldout, v, [self.model(v, "lite0"), self.model(v, "lite1")], "transfer-3", self.judge(2))
                 for v in main]
        jobs += [(args.heldout, v, [self.model(v, "lite0"), self.model(v, "lite1")], "medium", self.judge(2))
                 for v in main]
        for v in (x for x in everyone if x not in main):
            jobs.append((args.heldout, v, [self.model(v, "lite0"), self.model(v, "lite1")], "transfer", self.judge(2)))
            jobs.append((args.tuning, f"{v}-lite0", [self.model(v, "lite0")], "transfer", self.judge(1)))
            jobs.append((args.tuning, f"{v}-lite1", [self.model(v, "lite1")], "transfer", self.judge(0)))
            jobs.append((args.heldout, v, [self.model(v, "lite0"), self.model(v, "lite1")], "transfer-3",
                         self.judge(2)))
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(lambda job: self.frontier(*job), jobs))
        self.log("done")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--tuning", type=Path)
    parser.add_argument("--heldout", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", default="/tmp/surrogate-campaign", help="where trained files are kept")
    parser.add_argument("--keep-weights-in-out", action="store_true")
    parser.add_argument("--base-weights", default="", metavar="VARIANT=PATH[,...]",
                        help="checkpoints of Lite0/1/2 (default: their packages')")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="of the surrogates while protecting")
    parser.add_argument("--train-precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--train-workers", type=int, default=1)
    parser.add_argument("--threads", type=int, help="CPU threads of each training process")
    parser.add_argument("--deadline", type=float, default=1e9, help="seconds after which nothing more starts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny trainings and one photo per measurement")
    args = parser.parse_args()
    args.base_weights = {k: v for k, _, v in (item.partition("=") for item in args.base_weights.split(",") if item)}
    examples = ROOT / "examples" / "photos"
    args.corpus, args.tuning, args.heldout = (args.corpus or examples, args.tuning or examples,
                                              args.heldout or examples)
    if not args.smoke and not all((args.corpus, args.tuning, args.heldout)):
        parser.error("give --corpus, --tuning and --heldout (or --smoke)")
    Campaign(args).run()


if __name__ == "__main__":
    main()
