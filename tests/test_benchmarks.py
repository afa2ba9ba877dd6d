"""benchmarks/gpu.py --smoke on the CPU: every code path of the GPU script runs and measures every number."""

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


def flatten(node: object, path: str = "") -> dict[str, object]:
    if not isinstance(node, dict):
        return {path: node}
    flat: dict[str, object] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{path}.{key}" if path else key))
    return flat


def test_gpu_script_smoke_run_measures_every_number(tmp_path):
    output = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--json", str(output)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results = json.loads(output.read_text())
    assert results["smoke"] is True and results["device"] == "cpu"
    batches = results["settings"]["batch_sizes"]
    assert len(batches) == 2  # the smoke stand-ins for batch 64 and 256
    expected = {f"protect_224px_images_per_min.bucket_{bucket}.{call}"
                for bucket in ("off", "on") for call in ("first_call", "best_later_call")}
    expected |= {f"resnet_ms_per_image_iteration.{precision}.{column}" for precision in ("fp32", "bf16")
                 for column in [*(f"batch_{batch}" for batch in batches), "one_image_reference"]}
    expected |= {"resnet_ms_per_image_iteration.paper_loop"}
    expected |= {f"command_seconds.{run}.{time}" for run in ("one_photo", "folder")
                 for time in ("wall", "after_model_load")}
    measured = flatten(results["measurements"])
    assert set(measured) == expected
    bad = {path: value for path, value in measured.items()
           if isinstance(value, bool) or not isinstance(value, float | int) or not (math.isfinite(value) and value > 0)}
    assert not bad, bad
    assert results["command_photos"]["one_photo"]["photos"] == 1
    assert results["command_photos"]["folder"]["photos"] == 2
    # the table names every part
    for heading in ("images/minute", "ms per image-iteration", "scenepriv protect --device cpu"):
        assert heading in done.stdout


def test_photo_speed_smoke_run_measures_time_and_memory(tmp_path):
    """benchmarks/photo_speed.py --smoke: one tiny photo protected in a process of its own, its wall time and
    peak memory measured and tabled."""
    output = tmp_path / "speed.json"
    script = SCRIPT.parent / "photo_speed.py"
    done = subprocess.run([sys.executable, str(script), "--smoke", "--json", str(output)], capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    (row,) = json.loads(output.read_text())["rows"]
    assert row["strength"] == "low" and 0.03 < row["megapixels"] < 0.07
    assert row["after"]["exit"] == 0 and row["after"]["seconds"] > 0 and 0.1 < row["after"]["peak_gb"] < 8
    assert "| MP | strength | after s / GB |" in done.stdout


def test_strengths_run_summarizes_what_the_command_line_did(tmp_path):
    """benchmarks/strengths.py on one small photo: protect and the three verify runs, summarized into the JSON line
    that tools/doc_tables.py renders, pooled over two seeds (every check cell, both judges, seconds, the promise's
    verdict)."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    with Image.open(Path(__file__).resolve().parent.parent / "examples" / "photos" / "home.jpg") as image:
        image.convert("RGB").resize((160, 120)).save(folder / "small.jpg", quality=90)
    output = tmp_path / "strengths.jsonl"
    done = subprocess.run([sys.executable, str(SCRIPT.parent / "strengths.py"), str(folder), "--out",
                           str(tmp_path / "out"), "--strengths", "low", "--seeds", "0,1", "--json", str(output)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [json.loads(text) for text in output.read_text().splitlines()]
    assert line["strength"] == "low" and line["photos"] == 1 and line["files"] == ["small.jpg"]
    assert line["seeds"] == [0, 1] and len(line["butteraugli"]) == 2 and line["protected"] <= 2  # one per seed
    for seed in (0, 1):  # low: PNGs
        assert (tmp_path / "out" / f"low-seed{seed}" / "small.png").exists() and line["seconds_per_photo"] > 0
    assert set(line["holds"]) == {f"{quality}/{scale}" for quality in ("saved", "jpeg25", "jpeg50", "jpeg75", "jpeg95")
                                  for scale in ("x0.5", "x1")}
    assert all(share in (0.0, 0.5, 1.0) for share in line["holds"].values())  # of the two runs
    assert set(line["judges"]) == {"efficientnet-lite1", "efficientnet-lite2"}
    # a photo protected (its target leads on the file as saved) keeps low's promise (top-1 changed as saved)
    assert line["promise_holds"] or not line["protected"]


def test_depthwise_benchmark_times_both_kinds_of_step():
    """benchmarks/depthwise.py on the smallest setting: a row per model with both times and their ratio."""
    script = SCRIPT.parent / "depthwise.py"
    done = subprocess.run([sys.executable, str(script), "--models", "efficientnet-lite0", "--batches", "1",
                           "--threads", "1", "--repeat", "1"], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| efficientnet-lite0 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    bf16, fp32, ratio = float(cells[3].removesuffix(" ms")), float(cells[4].removesuffix(" ms")), float(cells[5])
    assert bf16 > 0 and fp32 > 0 and math.isclose(ratio, fp32 / bf16, rel_tol=0.05, abs_tol=0.01)
