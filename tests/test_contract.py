"""The contract with users: no bad input stops a batch, exit codes tell the truth, machine-readable output.

Each test names one way a run used to go wrong (a lost batch, exit 0 on failure, a traceback for a user's
mistake) and checks the behaviour that replaced it. Runs use ``--method fgsm`` or few iterations to stay quick.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import scenepriv
import scenepriv.methods
from scenepriv.cli import main
from scenepriv.images import load_photo
from scenepriv.settings import Settings
from test_cli import EXAMPLE_PHOTOS, console_script, copy_photos, error_lines, random_image, read_report, run_cli
from test_cli import usage_error as usage_error_line


def protected_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- exit codes tell the truth ------------------------------------------------------------------------------------


def test_protect_exits_1_and_names_each_photo_that_did_not_reach_its_goal(tmp_path, capsys):
    copy_photos(tmp_path / "in", "home.jpg", "leuvenA.jpg")

    code, out, err = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--max-iter", "0")

    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 2 and all("not protected" in line and "--max-iter" in line for line in lines), err
    assert {"home.jpg", "leuvenA.jpg"} == {name for name in ("home.jpg", "leuvenA.jpg") for line in lines
                                           if name in line}
    assert "protected             0 of 2" in out and "saved, not protected  2" in out
    assert protected_names(tmp_path / "out") == ["home.jpg", "leuvenA.jpg"]  # saved all the same: nothing lost


def test_verify_exits_1_when_a_check_fails(tmp_path, capsys):
    # An unprotected copy "verified" against itself: the top-1 never differs from the original's, so nothing holds.
    copy_photos(tmp_path / "copy", "home.jpg")

    code, out, err = run_cli(capsys, "verify", tmp_path / "copy", "--original", EXAMPLE_PHOTOS, "--jpeg", "75",
                             "--scale", "1", "--resamplers", "bilinear")

    assert code == 1
    [line] = error_lines(err)
    assert "home.jpg" in line and "2 of 2 checks fail" in line
    assert "protect their originals again" in out and "--strength high" in out  # not the strength it may have had


def test_verify_checks_what_the_strength_promises_and_says_so(tmp_path, capsys):
    """By default verify checks what the default strength promises (JPEG 50-95, half and full size, every
    resampler); --strength low checks the file as saved through the classifier's own resize."""
    from scenepriv.settings import PRESETS

    copy_photos(tmp_path / "copy", "home.jpg")  # unprotected: every check fails, each is listed
    code, out, _ = run_cli(capsys, "verify", tmp_path / "copy", "--original", EXAMPLE_PHOTOS, "--json")
    (verdict,) = json.loads(out[out.index("["):])
    medium = PRESETS["medium"]
    assert code == 1 and len(verdict["checks"]) == (1 + len(medium.jpeg)) * len(medium.scales) * 4
    assert {entry["check"].split("/")[0] for entry in verdict["checks"]} == {"saved", "jpeg50", "jpeg75", "jpeg95"}
    code, out, _ = run_cli(capsys, "verify", tmp_path / "copy", "--original", EXAMPLE_PHOTOS, "--json",
                           "--strength", "low")
    (verdict,) = json.loads(out[out.index("["):])
    assert [entry["check"] for entry in verdict["checks"]] == ["saved/x1/bilinear-antialias"]
    code, out, _ = run_cli(capsys, "verify", tmp_path / "copy", "--original", EXAMPLE_PHOTOS)
    assert "checking what medium promises" in out


def test_verify_exits_0_when_every_check_holds(tmp_path, capsys):
    copy_photos(tmp_path / "in", "leuvenA.jpg")
    code = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--seed", "0", "--strength", "medium")[0]
    assert code == 0

    code, _, err = run_cli(capsys, "verify", tmp_path / "out", "--original", tmp_path / "in", "--jpeg", "95",
                           "--scale", "1", "--resamplers", "bilinear-antialias")

    assert code == 0 and not error_lines(err), err


# --- one bad input never stops the others ---------------------------------------------------------------------------


def test_missing_path_and_link_loop_beside_a_photo_do_not_stop_it(tmp_path, capsys):
    copy_photos(tmp_path / "in", "home.jpg")
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)

    code, _, err = run_cli(capsys, "protect", tmp_path / "no_such_folder", loop, tmp_path / "in",
                           "-o", tmp_path / "out", "--method", "fgsm")

    assert code == 1
    lines = error_lines(err)
    assert sum("no_such_folder" in line for line in lines) == 1 and sum("loop.jpg" in line for line in lines) == 1, err
    assert protected_names(tmp_path / "out") == ["home.jpg"]


def test_a_newline_in_a_file_name_stays_on_its_error_line(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad\nname.png").write_bytes(b"not a png")
    copy_photos(tmp_path / "in", "home.jpg")

    code, _, err = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--method", "fgsm")

    assert code == 1
    assert all(line.startswith(("error:", "warning:")) or not line.strip() for line in err.splitlines()), err
    assert sum("bad\\nname.png" in line for line in error_lines(err)) == 1


def test_out_of_memory_on_one_photo_is_one_error_line(tmp_path, capsys, monkeypatch):
    """A photo too large for the memory (a 144-megapixel PNG once lost the whole batch): its batch is retried
    photo by photo, and only the photo that does not fit is reported."""
    (tmp_path / "in").mkdir()
    for seed, name in enumerate(("fits.png", "huge.png", "small.png")):  # one size: one batch of three
        random_image(tmp_path / "in" / name, size=(64, 48), seed=seed)
    huge = torch.from_numpy(np.array(Image.open(tmp_path / "in" / "huge.png"))).permute(2, 0, 1)  # as decoded
    original, batches = scenepriv.methods.protect, []

    def protect(images, *args, **kwargs):
        batches.append(len(images))
        if len(images) > 1 or torch.equal(images[0], huge):  # the batch, and then that photo alone, do not fit
            raise MemoryError
        return original(images, *args, **kwargs)

    monkeypatch.setattr(scenepriv.methods, "protect", protect)
    code, _, err = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--method", "fgsm")

    assert code == 1 and batches == [3, 1, 1, 1]
    [line] = error_lines(err)
    assert "huge.png" in line and "not enough memory" in line
    assert protected_names(tmp_path / "out") == ["fits.png", "small.png"]


def test_interrupt_keeps_report_and_files_consistent(tmp_path, capsys, monkeypatch):
    copy_photos(tmp_path / "in", "home.jpg", "leuvenA.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg")
    original = scenepriv.methods.protect
    home = load_photo(tmp_path / "in" / "home.jpg", torch.uint8).pixels

    def protect(images, *args, **kwargs):  # two photos may be at work at once: home stops once the first is saved
        if torch.equal(images[0], home):
            for _ in range(600):
                if (tmp_path / "out" / "aitzgorri_by_Aitzol_Berasategi.jpg").exists():
                    break
                time.sleep(0.1)
            raise KeyboardInterrupt
        return original(images, *args, **kwargs)

    monkeypatch.setattr(scenepriv.methods, "protect", protect)
    report = tmp_path / "r.jsonl"
    code, _, err = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--method", "fgsm",
                           "--batch-size", "1", "--report", report)

    assert code == 130
    saved = protected_names(tmp_path / "out")  # the third was at work beside the second: saved if it was done
    assert saved in (["aitzgorri_by_Aitzol_Berasategi.jpg"], ["aitzgorri_by_Aitzol_Berasategi.jpg", "leuvenA.jpg"])
    assert sorted(Path(r["output"]).name for r in read_report(report)) == saved
    assert any(f"interrupted: {len(saved)} of 3 photos saved" in line for line in error_lines(err)), err


# --- the report ------------------------------------------------------------------------------------------------------


def test_a_report_cut_off_mid_line_does_not_swallow_the_next_record(tmp_path, capsys):
    report = tmp_path / "r.jsonl"
    report.write_text('{"file": "a.jpg"}\n{"file": "b.jp', encoding="utf-8")  # a run killed while writing
    photo = random_image(tmp_path / "a.png")

    run_cli(capsys, "protect", photo, "-o", tmp_path / "out", "--method", "fgsm", "--report", report)

    lines = report.read_text(encoding="utf-8").splitlines()
    assert lines[1] == '{"file": "b.jp'
    assert json.loads(lines[2])["file"] == str(photo)


def test_report_naming_an_input_photo_is_refused(tmp_path, capsys):
    photo = random_image(tmp_path / "a.png")
    before = photo.read_bytes()
    code = main(["protect", str(photo), "-o", str(tmp_path / "out"), "--report", str(photo)])
    [line] = error_lines(capsys.readouterr().err)
    assert code == 1 and line.startswith("error: --report") and "a.png" in line
    assert photo.read_bytes() == before


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device that is always full)")
def test_a_full_disk_under_the_report_is_one_error_line_and_the_photos_are_saved(tmp_path, capsys):
    copy_photos(tmp_path / "in", "home.jpg", "leuvenA.jpg")

    code, _, err = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--method", "fgsm",
                           "--report", "/dev/full")

    assert code == 1 and "Traceback" not in err
    [line] = [line for line in error_lines(err) if "report" in line]
    assert "/dev/full" in line
    assert protected_names(tmp_path / "out") == ["home.jpg", "leuvenA.jpg"]


def test_report_dash_writes_json_lines_on_stdout_and_messages_on_stderr(tmp_path, capsys):
    copy_photos(tmp_path / "in", "home.jpg", "leuvenA.jpg")

    _, out, err = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--method", "fgsm",
                          "--report", "-")

    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(Path(r["file"]).name for r in records) == ["home.jpg", "leuvenA.jpg"]
    assert "photos                2" in err


# --- where outputs go ------------------------------------------------------------------------------------------------


def test_output_folder_equal_to_an_input_folder_is_refused(tmp_path, capsys):
    photo = random_image((tmp_path / "photos").mkdir() or tmp_path / "photos" / "a.jpg")
    code = main(["protect", str(tmp_path / "photos"), "-o", str(tmp_path / "photos")])
    [line] = error_lines(capsys.readouterr().err)
    assert code == 1 and "input folder" in line
    assert protected_names(tmp_path / "photos") == [photo.name]


@pytest.mark.parametrize("where", ["a file", "/proc"])
def test_an_output_folder_that_cannot_be_written_stops_before_any_work(tmp_path, capsys, where):
    photo = random_image(tmp_path / "a.png")
    if where == "a file":
        outdir = tmp_path / "taken"
        outdir.write_text("a file, not a folder")
    else:
        outdir = Path("/proc/scenepriv-test-output")  # not writable, even by root
    code = main(["protect", str(photo), "-o", str(outdir)])
    [line] = error_lines(capsys.readouterr().err)
    assert code == 1 and line.startswith("error: cannot write to the output folder")


# --- checkpoints -----------------------------------------------------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_a_checkpoint_with_code_in_it_is_refused_in_one_line_without_bad_advice(tmp_path, capsys):
    checkpoint = tmp_path / "evil.pth"
    with checkpoint.open("wb") as file:
        pickle.dump({"weights": _Payload()}, file)

    code = main(["classify", str(EXAMPLE_PHOTOS / "home.jpg"), "--weights", str(checkpoint)])

    captured = capsys.readouterr()
    [message] = error_lines(captured.err)
    assert code == 1 and "evil.pth" in message and "Traceback" not in captured.err
    assert "weights_only=False" not in message and "without running code" in message
    assert "should-never-run" not in captured.out


# --- machine-readable output and the command line itself -------------------------------------------------------------


def test_protect_json_and_quiet(tmp_path, capsys):
    copy_photos(tmp_path / "in", "home.jpg")
    (tmp_path / "in" / "bad.jpg").write_text("not a photo")

    code, out, err = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--method", "fgsm",
                             "--json", "--quiet")

    result = json.loads(out)
    assert result["photos"] == 2 and result["failed"] == 1 and len(result["records"]) == 1
    assert "bad.jpg" in result["errors"][0]
    assert code == 1 and err.splitlines() == [f"error: {result['errors'][0]}"]  # --quiet: errors only


def test_models_json(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    entries = json.loads(out)
    assert code == 0 and {e["name"] for e in entries} == set(scenepriv.MODELS)
    assert [e["name"] for e in entries if e["default"]] == ["efficientnet-lite0"]


def test_paths_from_stdin(tmp_path, capsys, monkeypatch):
    photos = copy_photos(tmp_path / "in", "home.jpg", "leuvenA.jpg")
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("\n".join(map(str, photos)) + "\n"))

    code, out, _ = run_cli(capsys, "classify", "-", "--top", "1", "--json")

    assert code == 0 and [r["file"] for r in json.loads(out)] == [str(p) for p in photos]


def test_help_and_version_do_not_import_torch():
    """``--help`` took 6-7 s when PyTorch was imported at start-up; the parser needs none of it."""
    code = ("import contextlib, sys\nfrom scenepriv.cli import main\n"
            "for argv in (['--help'], ['protect', '--help'], ['--version']):\n"
            "    with contextlib.suppress(SystemExit):\n        main(argv)\n"
            "main(['models'])\nassert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_version_no_arguments_and_python_dash_m(tmp_path):
    version = subprocess.run([console_script(), "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"scenepriv {scenepriv.__version__}"
    bare = subprocess.run([console_script()], capture_output=True, text=True, timeout=120)
    assert bare.returncode == 0 and "protect" in bare.stdout and "usage:" in bare.stdout
    module = subprocess.run([sys.executable, "-m", "scenepriv", "models"], capture_output=True, text=True,
                            timeout=120)
    assert module.returncode == 0 and "efficientnet-lite0 (default)" in module.stdout


def test_output_cut_short_by_the_reader_is_quiet(tmp_path):
    """``scenepriv classify ... | head`` used to end with a BrokenPipeError traceback."""
    photos = [str(p) for p in sorted(EXAMPLE_PHOTOS.glob("*.jpg"))]
    reader = subprocess.Popen([console_script(), "classify", *photos, "--top", "1000"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    reader.stdout.readline()
    reader.stdout.close()  # like `head -1`
    err = reader.stderr.read().decode()
    reader.wait(timeout=300)
    assert err == "", err


# --- the library refuses garbage -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [("eps", float("nan")), ("eps", float("inf")), ("eps", 1e9), ("eps", -1),
                                          ("max_perturbation", float("nan")), ("max_perturbation", -1),
                                          ("threshold", 2), ("sigma", float("nan")), ("max_iter", -1),
                                          ("max_iter", 1.5), ("iterations", -2), ("eps", "0.1")])
def test_settings_refuse_values_that_would_break_a_photo(field, value):
    with pytest.raises(ValueError, match=field):
        Settings(**{field: value})


@pytest.mark.parametrize("images, message", [
    (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
    (torch.full((1, 3, 8, 8), 200.0), "divide 0-255 values by 255"),
    (torch.full((1, 3, 8, 8), -0.5), r"\[0, 1\]"),
    (torch.zeros((0, 3, 8, 8)), "at least one image"),
    (torch.zeros((3, 8, 8)), "shape"),
    (torch.zeros((1, 3, 8, 8), dtype=torch.int64), "floats"),
])
def test_protect_refuses_images_it_cannot_use(tiny_classifier, images, message):
    with pytest.raises(ValueError, match=message):
        scenepriv.protect(images, tiny_classifier, "fgsm")


def test_protect_refuses_a_label_count_that_differs(tiny_classifier, random_images):
    with pytest.raises(ValueError, match="3 labels for 8 images"):
        scenepriv.protect(random_images, tiny_classifier, "n-fgsm", labels=torch.tensor([1, 2, 3]))


def test_protect_takes_uint8_and_numpy_as_documented(tiny_classifier, random_images):
    expected = scenepriv.protect(random_images, tiny_classifier, "fgsm", seed=0).images
    as_uint8 = (random_images * 255).round().to(torch.uint8)
    assert torch.equal(scenepriv.protect(as_uint8, tiny_classifier, "fgsm", seed=0).images, expected)
    assert torch.equal(scenepriv.protect(random_images.numpy(), tiny_classifier, "fgsm", seed=0).images, expected)


# --- packaging -------------------------------------------------------------------------------------------------------


def test_an_opencv_without_contrib_modules_is_named_with_its_fix(monkeypatch):
    from scenepriv import metrics

    monkeypatch.setitem(sys.modules, "cv2", type(sys)("cv2"))  # like opencv-python-headless shadowing contrib
    metrics.brisque_model.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip uninstall -y opencv-python opencv-python-headless"):
            metrics.brisque_model()
    finally:
        metrics.brisque_model.cache_clear()


def test_heic_photos_in_a_folder_are_protected(tmp_path, capsys):
    pillow_heif = pytest.importorskip("pillow_heif")
    (tmp_path / "in").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    pillow_heif.from_bytes(mode="RGB", size=(64, 48), data=pixels.tobytes()).save(tmp_path / "in" / "phone.heic")

    code, _, err = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--method", "fgsm")

    assert not [line for line in error_lines(err) if "not protected" not in line], err
    with Image.open(tmp_path / "out" / "phone.jpg") as saved:  # a lossy photo in, a JPEG out
        assert (saved.format, saved.size) == ("JPEG", (64, 48))


# --- your own model --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("library", ["torchvision", "timm"])
def test_wrapping_your_own_model_as_a_classifier(library, random_images):
    """The README's recipe: any torchvision or timm network becomes a pixel-space Classifier that protect() takes."""
    import torchvision

    labels = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    if library == "torchvision":
        network = torchvision.models.resnet18(weights=None)
    else:
        import timm

        network = timm.create_model("resnet18", pretrained=False)
    classifier = scenepriv.Classifier(network, name=f"my-{library}-resnet18", labels=labels, input_size=(224, 224),
                                      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

    result = scenepriv.protect(random_images[:2], classifier, "p-fgsm", seed=0, max_iter=2)

    assert result.images.shape == (2, 3, 32, 32)
    assert all(0 <= int(g) < 1000 for g in result.goals)
    assert all(r["goal"]["classes"][0]["name"] in labels for r in result.records)
    assert not any(p.requires_grad for p in network.parameters())  # frozen: only the input is differentiated


# --- several models ---------------------------------------------------------------------------------------------------


def test_protect_against_an_ensemble_and_verify_on_another_model(tmp_path, capsys):
    copy_photos(tmp_path / "in", "leuvenA.jpg")
    report = tmp_path / "r.jsonl"

    code, _, err = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--seed", "0",
                           "--model", "efficientnet-lite0,efficientnet-lite1", "--report", report)

    [record] = read_report(report)
    assert record["model"] == "efficientnet-lite0+efficientnet-lite1"
    assert [m["model"] for m in record["models"]] == ["efficientnet-lite0", "efficientnet-lite1"]
    target = record["goal"]["classes"][0]["name"]
    assert code == 0 and record["success"], err
    threshold = record["settings"]["threshold"]
    assert all(m["final_top1"] == target and m["probability"] >= threshold for m in record["models"])

    code, out, _ = run_cli(capsys, "verify", tmp_path / "out", "--original", tmp_path / "in", "--jpeg", "95",
                           "--scale", "1", "--resamplers", "bilinear-antialias", "--models",
                           "efficientnet-lite1,efficientnet-lite2", "--json")
    results = json.loads(out)
    assert [r["model"] for r in results] == ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
    assert all(c["holds"] for r in results[:2] for c in r["checks"])  # the models it was protected against
    holds_on_lite2 = all(c["holds"] for c in results[2]["checks"])
    assert code == (0 if holds_on_lite2 else 1)


def test_an_unknown_model_name_is_refused(tmp_path, capsys):
    line = usage_error_line(capsys, "protect", random_image(tmp_path / "a.png"), "-o", tmp_path / "out",
                            "--model", "efficientnet-lite0,nope")
    assert "argument --model" in line and "nope" in line


# --- strength presets ------------------------------------------------------------------------------------------------


def test_the_default_strength_holds_through_a_sites_jpeg_in_a_jpeg_no_larger(tmp_path, capsys):
    """No strength named: the platform-proof preset; a JPEG in gives a JPEG out, about as large, whose top-1 differs
    from the original's as saved and after a site's JPEG re-encoding (75) at full and half size (judged in fp32)."""
    from scenepriv import verify
    from scenepriv.images import jpeg_quality, load_photo
    from scenepriv.settings import DEFAULT_STRENGTH, STRENGTHS

    copy_photos(tmp_path / "in", "leuvenA.jpg")
    report = tmp_path / "r.jsonl"
    code, _, err = run_cli(capsys, "protect", tmp_path / "in", "-o", tmp_path / "out", "--seed", "0",
                           "--report", report, "--compare", tmp_path / "compare")

    [record] = read_report(report)
    assert code == 0 and record["success"] and record["strength"] == DEFAULT_STRENGTH == "medium", err
    assert all(record["settings"][key] == value for key, value in STRENGTHS["medium"].items())
    saved = tmp_path / "out" / "leuvenA.jpg"
    with Image.open(saved) as image, Image.open(EXAMPLE_PHOTOS / "leuvenA.jpg") as photo:
        assert image.format == "JPEG" and record["jpeg_quality"] == min(95, max(85, jpeg_quality(photo)))
    assert saved.stat().st_size <= 2 * (EXAMPLE_PHOTOS / "leuvenA.jpg").stat().st_size
    antialiased = scenepriv.load_classifier(resize="bilinear-antialias")  # fp32: as a platform runs it
    checks = verify.checks([75], [1.0, 0.5], ["bilinear-antialias"])
    verdict = verify.judge(antialiased, load_photo(saved).pixels, load_photo(EXAMPLE_PHOTOS / "leuvenA.jpg").pixels,
                           checks)
    assert all(entry["holds"] for entry in verdict["checks"]), verdict
    with Image.open(tmp_path / "compare" / "leuvenA.png") as crop:  # original | protected, labelled: a 256 px
        assert crop.size == (2 * 256 + 8, 24 + 256 + 20 + 192)  # crop at 100% over the whole 751x563 photo at 256 px


def test_options_given_beside_a_strength_win(tmp_path, capsys):
    report = tmp_path / "r.jsonl"
    run_cli(capsys, "protect", random_image(tmp_path / "a.png"), "-o", tmp_path / "out", "--strength", "low",
            "--max-iter", "3", "--max-perturbation", "2/255", "--report", report)
    settings = read_report(report)[0]["settings"]
    assert settings["max_iter"] == 3 and settings["max_perturbation"] == 2 / 255
    assert settings["texture_budget"] is None and settings["texture_mask"] == 0.02  # one bound: the one given


def test_a_users_problem_raised_deep_inside_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    from scenepriv import cli
    from scenepriv.evaluate import EvaluationError
    from scenepriv.images import ImageError
    from scenepriv.zoo.cache import WeightsUnavailable

    assert all(issubclass(kind, scenepriv.ScenePrivError) for kind in (ImageError, WeightsUnavailable,
                                                                       EvaluationError))

    def unavailable(args, console):
        raise WeightsUnavailable("weights file x.pth not found (or not a regular file)")

    monkeypatch.setattr(cli, "command_models", unavailable)
    assert main(["models"]) == 1
    assert capsys.readouterr().err == "error: weights file x.pth not found (or not a regular file)\n"
    monkeypatch.setattr(cli, "command_models", lambda args, console: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["models"])


def test_compare_crops_never_replace_the_protected_photos(tmp_path, capsys):
    photo = random_image((tmp_path / "in").mkdir() or tmp_path / "in" / "a.png")
    for folder in (tmp_path / "out", tmp_path / "in"):
        code = main(["protect", str(photo), "-o", str(tmp_path / "out"), "--compare", str(folder)])
        [line] = error_lines(capsys.readouterr().err)
        assert code == 1 and "--compare" in line


def test_a_resamplers_overshoot_below_half_a_grey_level_is_accepted(tiny_classifier):
    images = torch.full((1, 3, 32, 32), 0.5)
    images[..., 0, 0] = 1 + 1e-6  # what an antialiased resize of a white pixel can give
    result = scenepriv.protect(images, tiny_classifier, "fgsm")
    assert float(result.images.max()) <= 1
