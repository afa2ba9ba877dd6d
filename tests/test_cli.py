"""End-to-end tests of the command line: ``scenepriv protect``, ``classify`` and ``models``.

The CLI is called in-process through :func:`scenepriv.cli.main`; one test runs the installed console script.
Only the example photos of the repository and files generated in ``tmp_path`` are used. To stay quick on a
CPU, most runs use ``--method fgsm`` (a single step) or a small ``--max-iter``; one run uses the defaults.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import scenepriv
from scenepriv import MODELS
from scenepriv.cli import main
from scenepriv.images import load_photo
from scenepriv.runtime import PHOTO_HEAP_BLOCKS

EXAMPLE_PHOTOS = Path(__file__).resolve().parent.parent / "examples" / "photos"
DEFAULT_RUN_PHOTOS = ("home.jpg", "leuvenA.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg")
REPORT_FIELDS = {"file", "output", "method", "clean_top5", "goal", "iterations", "success", "final_top5",
                 "linf", "l2", "psnr", "ssim"}


def copy_photos(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(EXAMPLE_PHOTOS / name, folder / name)) for name in names]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_error(capsys, *args) -> str:
    """Run a command that must stop with exit status 1 and a clean one-line ``error:`` message (a user's problem,
    ScenePrivError: the one channel for them); return that message."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    lines = error_lines(err)
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def read_report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def top1(classifier, path: Path) -> int:
    with torch.inference_mode():
        return int(classifier(load_photo(path).pixels[None]).argmax(1)[0])


def random_image(path: Path, size=(48, 32), mode="RGB", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path)
    return path


# --- protect: bad inputs beside good ones ------------------------------------------------------------------------


def test_protect_reports_each_bad_file_and_converts_the_rest(tmp_path, capsys):
    inputs = tmp_path / "in"
    copy_photos(inputs, "home.jpg", "leuvenA.jpg")
    (inputs / "notes.jpg").write_text("not a photo\n")
    (inputs / "empty.png").touch()
    data = (EXAMPLE_PHOTOS / "aitzgorri_by_Aitzol_Berasategi.jpg").read_bytes()
    (inputs / "truncated.jpg").write_bytes(data[: len(data) // 2])
    random_image(inputs / "gray.png", mode="L", seed=1)
    rgba = np.random.default_rng(2).integers(0, 256, size=(32, 48, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(inputs / "rgba.png")
    random_image(inputs / "cmyk.jpg", mode="CMYK", seed=3)
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((200, 30, 30), (30, 30, 200), (30, 200, 30))]
    frames[0].save(inputs / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    outdir = tmp_path / "out"

    code, out, err = run_cli(capsys, "protect", inputs, "-o", outdir, "--method", "fgsm", "--seed", "0")

    assert code == 1
    errors = error_lines(err)
    assert len(errors) == 3, err
    for bad in ("notes.jpg", "empty.png", "truncated.jpg"):
        assert sum(bad in line for line in errors) == 1, err
    assert any("anim.gif" in line and "frame" in line for line in err.splitlines() if line.startswith("warning:"))
    assert "Traceback" not in err

    # a JPEG stays a JPEG (a file to upload), the lossless formats become PNG
    good = {"home": "JPEG", "leuvenA": "JPEG", "gray": "PNG", "rgba": "PNG", "cmyk": "JPEG", "anim": "PNG"}
    names = {name: f"{name}.{'jpg' if kind == 'JPEG' else 'png'}" for name, kind in good.items()}
    assert sorted(p.name for p in outdir.rglob("*")) == sorted(names.values())  # no .part left
    sources = {path.stem: path for path in inputs.iterdir()}
    for name, kind in good.items():
        with Image.open(sources[name]) as source, Image.open(outdir / names[name]) as image:
            assert (image.format, image.mode, image.size) == (kind, "RGB", source.size)  # full resolution

    assert re.search(r"^photos\s+9$", out, re.MULTILINE), out
    assert re.search(r"^protected\s+\d+ of 9$", out, re.MULTILINE), out
    assert re.search(r"^not saved\s+3 \(see the error lines\)$", out, re.MULTILINE), out
    for row in ("top-1 changed", "mean iterations", "mean PSNR / SSIM", "time"):
        assert re.search(rf"^{re.escape(row)}\s+\S", out, re.MULTILINE), out


def test_a_jpeg_is_saved_with_its_own_chroma_subsampling(tmp_path, capsys):
    """A 4:4:4 or 4:2:2 JPEG is not coarsened to 4:2:0 (its own loss would show), and the report says so."""
    from PIL import JpegImagePlugin

    pixels = np.random.default_rng(3).integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    for subsampling in (0, 1, 2):
        Image.fromarray(pixels).save(tmp_path / f"s{subsampling}.jpg", quality=90, subsampling=subsampling)
    report = tmp_path / "r.jsonl"
    code, _, err = run_cli(capsys, "protect", tmp_path, "-o", tmp_path / "out", "--strength", "paper",
                           "--max-iter", "2", "--report", report)
    assert code in (0, 1) and len(read_report(report)) == 3, err  # saved, protected or not in two steps
    names = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
    for record in read_report(report):
        subsampling = int(Path(record["file"]).stem[1])
        with Image.open(record["output"]) as image:
            assert JpegImagePlugin.get_sampling(image) == subsampling
        assert (record["jpeg_quality"], record["jpeg_subsampling"]) == (90, names[subsampling])


# --- protect with the default settings --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One ``scenepriv protect --strength paper`` (the paper's settings, full size) on three example photos."""
    root = tmp_path_factory.mktemp("default_run")
    inputs = copy_photos(root / "in", *DEFAULT_RUN_PHOTOS)
    outdir, report = root / "out", root / "r.jsonl"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["protect", str(root / "in"), "-o", str(outdir), "--seed", "0", "--report", str(report),
                     "--strength", "paper"])
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "inputs": inputs, "outdir": outdir,
            "report": report}


def test_default_run_succeeds_on_every_photo(default_run):
    assert default_run["code"] == 0, default_run["err"]
    assert error_lines(default_run["err"]) == []
    assert re.search(r"^photos\s+3$", default_run["out"], re.MULTILINE)
    assert re.search(r"^top-1 changed\s+3 of 3$", default_run["out"], re.MULTILINE), default_run["out"]
    assert sorted(p.name for p in default_run["outdir"].iterdir()) == sorted(
        f"{Path(name).stem}.jpg" for name in DEFAULT_RUN_PHOTOS  # a JPEG in, a JPEG out
    )


def test_default_run_changes_what_the_classifier_sees(default_run, embedded_classifier):
    records = {record["file"]: record for record in read_report(default_run["report"])}
    antialiased = scenepriv.load_classifier(resize="bilinear-antialias")  # what full-size protection optimises
    for source in default_run["inputs"]:
        output = default_run["outdir"] / f"{source.stem}.jpg"
        record = records[str(source)]
        # the paper's resize (no antialiasing) sees the change too
        assert top1(embedded_classifier, output) != top1(embedded_classifier, source), source.name
        clean, protected = top1(antialiased, source), top1(antialiased, output)
        assert protected != clean, source.name
        # The report describes the same classifications: clean top-1 on the photo, target on the saved JPEG.
        # (bf16 on CPUs that run it natively can swap two classes whose probabilities nearly tie.)
        assert clean in [entry["index"] for entry in record["clean_top5"][:2]]
        assert record["final_top5"][0]["index"] == protected == record["goal"]["classes"][0]["index"]


def test_default_run_report_has_one_complete_record_per_photo(default_run):
    records = read_report(default_run["report"])

    assert sorted(r["file"] for r in records) == sorted(str(p) for p in default_run["inputs"])
    for record in records:
        assert REPORT_FIELDS <= record.keys()
        assert Path(record["output"]) == default_run["outdir"] / f"{Path(record['file']).stem}.jpg"
        assert record["method"] == "p-fgsm" and record["settings"]["sigma"] == 0.99
        assert record["goal"]["toward"] is True and len(record["goal"]["classes"]) == 1
        target = record["goal"]["classes"][0]
        assert {"index", "name", "rank", "mass_above"} <= target.keys()
        # Eq. 10: the target is drawn among the classes whose higher-ranked classes hold more than sigma.
        assert target["mass_above"] > 0.99 or record["goal"]["fallback_least_likely"] is True
        assert target["rank"] >= 1
        assert 1 <= record["iterations"] <= 50
        assert record["success"] is True
        assert record["final_top5"][0]["index"] == target["index"]
        assert record["final_top5"][0]["probability"] >= 0.989
        assert len(record["clean_top5"]) == len(record["final_top5"]) == 5
        assert 0 < record["linf"] <= record["iterations"] * 0.007 + 1 / 255
        assert record["l2"] > 0 and record["psnr"] > 20 and 0 < record["ssim"] < 1


def test_report_is_appended_never_overwritten(default_run, tmp_path, capsys):
    report = tmp_path / "r.jsonl"
    shutil.copy(default_run["report"], report)
    before = report.read_text(encoding="utf-8")

    code, _, _ = run_cli(capsys, "protect", *default_run["inputs"], "-o", tmp_path / "again",
                         "--method", "fgsm", "--seed", "0", "--report", report)

    assert code == 0
    after = report.read_text(encoding="utf-8")
    assert after.startswith(before)
    records = read_report(report)
    assert len(records) == 2 * len(DEFAULT_RUN_PHOTOS)
    assert [r["method"] for r in records[len(DEFAULT_RUN_PHOTOS):]] == ["fgsm"] * len(DEFAULT_RUN_PHOTOS)


# --- reproducibility -----------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_pngs_and_the_same_targets_whatever_the_batch_size(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("home.jpg", "leuvenA.jpg"):  # one size, so that a batch of 4 holds both
        Image.open(EXAMPLE_PHOTOS / name).convert("RGB").resize((320, 240)).save(inputs / f"{Path(name).stem}.png")
    runs, goals = {}, {}
    for label, batch_size in (("batch1", 1), ("batch4", 4), ("batch4-again", 4)):
        outdir = tmp_path / label
        code, _, err = run_cli(capsys, "protect", inputs, "-o", outdir, "--seed", "0", "--max-iter", "2",
                               "--batch-size", batch_size, "--report", tmp_path / f"{label}.jsonl")
        assert code in (0, 1) and all("not protected" in line for line in error_lines(err)), err
        runs[label] = {p.name: p.read_bytes() for p in sorted(outdir.iterdir())}
        goals[label] = [r["goal"] for r in read_report(tmp_path / f"{label}.jsonl")]

    assert sorted(runs["batch1"]) == ["home.png", "leuvenA.png"]
    assert runs["batch4"] == runs["batch4-again"]  # the same batches: the same bytes
    # Targets come from the seed and each photo's own pixels, so they do not depend on the batch; the pixels may,
    # by float32 rounding in a batch of another composition (the cluster backend keeps the batches for that).
    assert goals["batch1"] == goals["batch4"] and len(goals["batch1"]) == 2
    assert runs["batch1"]["home.png"] != runs["batch1"]["leuvenA.png"]


# --- where outputs go -----------------------------------------------------------------------------------------------


def test_output_never_overwrites_an_input(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    victim = random_image(folder / "a.png", seed=4)
    original = victim.read_bytes()
    random_image(folder / "b.jpg", seed=5)

    jpeg = (folder / "b.jpg").read_bytes()
    code, _, err = run_cli(capsys, "protect", folder / "a.png", folder / "b.jpg", "-o", folder, "--method", "fgsm",
                           "--format", "png")

    assert code != 0
    errors = error_lines(err)
    assert len(errors) == 1 and "a.png" in errors[0], err
    assert victim.read_bytes() == original
    # The other photo is still protected, and nothing temporary is left in the folder.
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.jpg", "b.png"]
    # With the default format a JPEG's output is a JPEG of the same name: refused too
    code, _, err = run_cli(capsys, "protect", folder / "b.jpg", "-o", folder, "--method", "fgsm")
    assert code != 0 and len(error_lines(err)) == 1 and "overwrite" in err
    assert (folder / "b.jpg").read_bytes() == jpeg


def test_same_stem_different_extensions_get_distinct_outputs(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    random_image(folder / "x.jpg", seed=6)
    random_image(folder / "x.png", seed=7)
    outdir, report = tmp_path / "out", tmp_path / "r.jsonl"

    code, _, err = run_cli(capsys, "protect", folder, "-o", outdir, "--method", "fgsm", "--report", report,
                           "--format", "png")

    assert code == 0, err
    outputs = {Path(r["file"]).name: Path(r["output"]) for r in read_report(report)}
    assert set(outputs) == {"x.jpg", "x.png"}
    # The clash is resolved by keeping each input's extension, so an output still says where it came from.
    assert (outputs["x.jpg"].name, outputs["x.png"].name) == ("x.jpg.png", "x.png.png")
    assert all(path.parent == outdir and path.suffix == ".png" and path.is_file() for path in outputs.values())
    assert outputs["x.jpg"].read_bytes() != outputs["x.png"].read_bytes()
    assert len(list(outdir.iterdir())) == 2
    # With the default format the two keep their kinds, so their names no longer clash
    run_cli(capsys, "protect", folder, "-o", tmp_path / "auto", "--method", "fgsm")
    assert sorted(p.name for p in (tmp_path / "auto").iterdir()) == ["x.jpg", "x.png"]


def test_same_name_in_two_input_folders_gets_distinct_outputs(tmp_path, capsys):
    random_image((tmp_path / "day1").mkdir() or tmp_path / "day1" / "x.jpg", seed=8)
    random_image((tmp_path / "day2").mkdir() or tmp_path / "day2" / "x.jpg", seed=9)
    outdir, report = tmp_path / "out", tmp_path / "r.jsonl"

    code, _, err = run_cli(capsys, "protect", tmp_path / "day1", tmp_path / "day2", "-o", outdir,
                           "--method", "fgsm", "--report", report, "--format", "png")

    assert code == 0, err
    outputs = [Path(r["output"]) for r in read_report(report)]
    assert len(outputs) == 2 and outputs[0] != outputs[1]
    assert all(path.is_file() for path in outputs)
    assert len(list(outdir.iterdir())) == 2


# --- classify and models ---------------------------------------------------------------------------------------


def test_classify_json_top3(capsys):
    photo = EXAMPLE_PHOTOS / "home.jpg"

    code, out, _ = run_cli(capsys, "classify", photo, "--top", "3", "--json")

    assert code == 0
    (result,) = json.loads(out)
    assert result["file"] == str(photo) and result["model"] == "efficientnet-lite0"
    probabilities = [entry["probability"] for entry in result["top"]]
    assert len(probabilities) == 3
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 <= p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-9
    assert all(isinstance(entry["name"], str) and entry["name"] for entry in result["top"])
    assert len({entry["index"] for entry in result["top"]}) == 3


def test_classify_goes_on_after_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo\n")
    photo = EXAMPLE_PHOTOS / "leuvenA.jpg"

    code, out, err = run_cli(capsys, "classify", bad, photo, "--top", "2")

    assert code == 1
    errors = error_lines(err)
    assert len(errors) == 1 and "notes.jpg" in errors[0]
    lines = out.splitlines()
    assert lines[0] == str(photo)
    assert [line.lstrip()[:3] for line in lines[1:]] == ["1. ", "2. "]


def test_models_lists_the_zoo(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCENEPRIV_CACHE_DIR", str(tmp_path / "empty-cache"))

    code, out, _ = run_cli(capsys, "models")

    assert code == 0
    blocks = {}
    for line in out.splitlines():
        if line and not line.startswith(" "):
            name = line.split()[0]
            blocks[name] = []
        else:
            blocks[name].append(line.strip())
    packaged = {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"}
    expected = packaged | {"resnet18-places365", "resnet50-places365", "alexnet-places365", "densenet161-places365"}
    assert set(blocks) == expected == set(MODELS)
    for name in packaged:  # the test extra installs the packages of Lite1 and Lite2
        assert "offline: yes" in blocks[name], blocks[name]
    for name in expected - packaged:
        offline = [line for line in blocks[name] if line.startswith("offline:")]
        assert len(offline) == 1 and offline[0].startswith("offline: no"), blocks[name]
        assert any(line.startswith("weights:") and str(tmp_path / "empty-cache") in line for line in blocks[name])


# --- clean errors -------------------------------------------------------------------------------------------------


def test_missing_input_alone_is_one_error_line_and_no_work(tmp_path, capsys):
    code = main(["protect", str(tmp_path / "no_such_photo.jpg"), "-o", str(tmp_path / "out")])
    missing, stop = error_lines(capsys.readouterr().err)
    assert code == 1 and stop.startswith("error: no photos")
    assert "no_such_photo.jpg" in missing and "no such file" in missing
    assert not (tmp_path / "out").exists()


def usage_error(capsys, *args) -> str:
    """Run a command that argparse must refuse (exit status 2); return its one ``error:`` line."""
    with pytest.raises(SystemExit) as caught:
        main([str(a) for a in args])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "error:" in line]
    return line


NUMBERS = ["nan", "inf", "-inf", "1e9", "-1", "abc"]


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [("protect", "--sigma", "2"), ("protect", "--threshold", "-0.5"), ("protect", "--batch-size", "0"),
     ("protect", "--quality", "1000"), ("protect", "--quality", "0"), ("protect", "--max-iter", "-3"),
     ("protect", "--seed", "-1"), ("protect", "--iterations", "1.5"),
     *[("protect", "--eps", v) for v in NUMBERS], *[("protect", "--max-perturbation", v) for v in NUMBERS],
     *[("verify", "--scale", v) for v in ["0", "-1", "inf", "nan", "0.5,nan", ","]],
     ("verify", "--jpeg", "1000,-5"), ("verify", "--jpeg", "50,x"), ("classify", "--top", "0")],
)
def test_invalid_number_is_refused_naming_the_option_before_any_work(tmp_path, capsys, command, option, value):
    photo = random_image(tmp_path / "a.png")
    output = ["-o", tmp_path / "out"] if command == "protect" else []
    line = usage_error(capsys, command, photo, *output, f"{option}={value}")
    assert f"argument {option}" in line
    assert not (tmp_path / "out").exists()


def test_a_step_given_as_a_fraction_is_accepted(tmp_path, capsys):
    photo = random_image(tmp_path / "a.png")
    report = tmp_path / "r.jsonl"
    run_cli(capsys, "protect", photo, "-o", tmp_path / "out", "--eps", "2/255", "--max-iter", "1", "--report", report)
    assert read_report(report)[0]["settings"]["eps"] == 2 / 255


def test_empty_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "README.txt").write_text("nothing to see\n")
    assert "no photos" in cli_error(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error(capsys):
    assert "cuda" in cli_error(capsys, "classify", EXAMPLE_PHOTOS / "home.jpg", "--device", "cuda")


# --- the installed console script ----------------------------------------------------------------------------------


def console_script() -> str:
    beside = Path(sys.executable).with_name("scenepriv.exe" if os.name == "nt" else "scenepriv")
    found = str(beside) if beside.exists() else shutil.which("scenepriv")
    assert found, "the `scenepriv` console script is not installed"
    return found


def test_console_script_runs(tmp_path):
    """The installed ``scenepriv`` command classifies a photo and reports a bad file on one line, no traceback."""
    photo, missing = EXAMPLE_PHOTOS / "home.jpg", tmp_path / "missing.jpg"

    done = subprocess.run([console_script(), "classify", str(missing), str(photo), "--top", "2", "--json"],
                          capture_output=True, text=True, timeout=300)

    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "missing.jpg" in done.stderr and "Traceback" not in done.stderr
    (result,) = json.loads(done.stdout)
    assert result["file"] == str(photo) and len(result["top"]) == 2


@pytest.mark.parametrize("command, largest", [(["protect", "-o", "out"], PHOTO_HEAP_BLOCKS),
                                              (["protect", "-o", "out", "--size", "model"], None),
                                              (["evaluate", "-o", "results"], None)])
def test_freed_memory_is_kept_whole_for_model_size_work_and_below_large_blocks_at_full_size(
        tmp_path, monkeypatch, capsys, command, largest):
    """At full size keeping every freed block costs a third to a half more peak memory (docs/speed.md)."""
    calls = []
    monkeypatch.setattr("scenepriv.runtime.keep_freed_memory", lambda largest=None: calls.append(largest))
    (tmp_path / "empty").mkdir()
    cli_error(capsys, command[0], tmp_path / "empty", *[tmp_path / a if a in ("out", "results") else a
                                                          for a in command[1:]])
    assert calls == [largest]


def test_a_photo_smaller_than_the_ssim_window_is_protected_with_no_ssim(tmp_path, capsys):
    """SSIM needs an 11x11 window inside the photo; an 8x9 photo still gets protected, its SSIM is null."""
    (tmp_path / "in").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in" / "tiny.png")
    copy_photos(tmp_path / "in", "home.jpg")
    report = tmp_path / "report.jsonl"
    code, _, err = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--max-iter", "1",
                           "--report", report, "--strength", "paper")  # one step of 0.007: every pixel moves
    by_file = {Path(r["file"]).name: r for r in read_report(report)}
    # one iteration may not reach the goal: then that photo is an error line and the exit status 1
    missed = [name for name, record in by_file.items() if not record["success"]]
    assert code == (1 if missed else 0) and len(error_lines(err)) == len(missed), err
    assert by_file["tiny.png"]["ssim"] is None and by_file["tiny.png"]["psnr"] > 0
    assert 0 < by_file["home.jpg"]["ssim"] <= 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["home.jpg", "tiny.png"]


def test_a_file_that_cannot_be_written_is_one_error_line_and_the_rest_are_saved(tmp_path, capsys):
    copy_photos(tmp_path / "in", "home.jpg", "leuvenA.jpg")
    (tmp_path / "out" / "home.jpg").mkdir(parents=True)  # a folder where the output should go
    code, _, err = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--max-iter", "1",
                           "--batch-size", "1")
    assert code == 1
    [line] = [line for line in error_lines(err) if "not protected" not in line]
    assert "home.jpg" in line and "cannot write" in line
    with Image.open(tmp_path / "out" / "leuvenA.jpg") as saved:
        assert saved.size == Image.open(EXAMPLE_PHOTOS / "leuvenA.jpg").size
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_cluster_options_without_ray_are_refused(tmp_path, capsys):
    photo = random_image(tmp_path / "a.png")
    line = cli_error(capsys, "protect", photo, "-o", tmp_path / "out", "--workers", "2")
    assert "--workers and --gpus-per-worker are for --ray" in line
    assert not (tmp_path / "out").exists()


def test_each_batch_at_work_has_its_own_step_bar_on_its_own_line_even_with_one_file_name():
    """Two batches at once (two folders may both hold a beach.jpg): a bar and a line each; "done" closes its own."""
    from scenepriv.commands import Console

    console = Console(verbosity=-1)  # bars disabled: their bookkeeping is what is checked
    first, second = [Path("a/beach.jpg")], [Path("b/beach.jpg")]
    console.steps(first, "step", 3)
    console.steps(second, "step", 1)
    assert sorted(line for _, line in console.step_bars.values()) == [1, 2]
    console.steps(first, "done", 7)
    assert [line for _, line in console.step_bars.values()] == [2]
    console.steps([Path("c/kite.jpg")], "step", 0)  # the freed line is taken again
    assert sorted(line for _, line in console.step_bars.values()) == [1, 2]
    console.close_steps()
    assert not console.step_bars
