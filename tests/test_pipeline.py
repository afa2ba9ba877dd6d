"""The file pipeline that the command line, the web page and the cluster backend share."""

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import scenepriv
from scenepriv import metrics, pipeline
from scenepriv.images import find_images, load_photo


def photo(path: Path, seed: int, size=(40, 32)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo(inputs / "a.png", 0)
    (inputs / "b.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    photo(inputs / "c.png", 1, size=(24, 36))
    photo(inputs / "d.png", 2)
    return inputs


def test_one_result_per_file_in_order_a_bad_file_named_and_the_rest_saved(folder, tmp_path, tiny_classifier):
    pairs = pipeline.output_pairs(find_images([folder]), tmp_path / "out")
    _, settings = pipeline.resolve_settings("fgsm", size="model")
    job = pipeline.Job(method="fgsm", settings=settings, strength="paper", seed=0, batch_size=2)
    report = pipeline.Report(str(tmp_path / "report.jsonl"))

    results = list(pipeline.protect_files(pairs, [tiny_classifier], job, report=report))
    report.close()

    assert [r.source.name for r in results] == ["a.png", "b.jpg", "c.png", "d.png"]
    assert [r.output.name for r in results] == ["a.png", "b.jpg", "c.png", "d.png"]
    bad = results[1]
    assert bad.record is None and "b.jpg" in bad.error and "\n" not in bad.error and not bad.output.exists()
    records = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    assert [r.record for r in results if r.record] == records
    for result in (results[0], results[2], results[3]):
        assert result.error is None and result.record["method"] == "fgsm" and result.record["strength"] == "paper"
        saved = load_photo(result.output).pixels
        assert saved.shape == load_photo(result.source).pixels.shape  # full size by default
        assert result.record["goal"] == {"toward": False, "classes": [result.record["goal"]["classes"][0]]}


def test_results_equal_the_library_call_on_the_same_photo(folder, tmp_path, tiny_classifier):
    pairs = pipeline.output_pairs(find_images([folder / "a.png"]), tmp_path / "out")
    _, settings = pipeline.resolve_settings("p-fgsm", size="model", max_iter=5)
    job = pipeline.Job(settings=settings, strength="paper", seed=3)
    [result] = pipeline.protect_files(pairs, [tiny_classifier], job)

    direct = scenepriv.protect(load_photo(folder / "a.png").pixels[None], tiny_classifier, seed=3, settings=settings)
    assert (load_photo(result.output).pixels == direct.images[0]).all()
    assert result.record["goal"] == direct.records[0]["goal"]


def test_closing_early_still_reports_the_files_being_written(folder, tmp_path, tiny_classifier):
    for at_once in (1, 2):
        out = tmp_path / f"out{at_once}"
        job = pipeline.Job(method="fgsm", settings=pipeline.resolve_settings("fgsm")[1], strength="paper",
                           batch_size=1, at_once=at_once)
        report = pipeline.Report(str(out / "report.jsonl"))
        results = pipeline.protect_files(pipeline.output_pairs(find_images([folder / "a.png", folder / "c.png",
                                                                            folder / "d.png"]), out), [tiny_classifier],
                                         job, report=report)
        first = next(results)  # a.png yielded; one at a time, c.png has been protected and handed to the writer
        results.close()  # two at a time, d.png was at work too: saved where it was done
        report.close()

        saved = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
        reported = [Path(json.loads(line)["output"]).name for line in (out / "report.jsonl").read_text().splitlines()]
        assert first.output.name == "a.png" and saved == reported
        assert saved == ["a.png", "c.png"] if at_once == 1 else saved[0] == "a.png"


def test_two_batches_at_once_each_on_half_the_cores_give_their_results_in_order(folder, tmp_path, tiny_classifier):
    """On a CPU, small batches are protected two at a time in threads, each on half the cores: the results come in
    order, and each photo is protected as it is one batch at a time on that many cores."""
    pairs = pipeline.output_pairs(find_images([folder]), tmp_path / "two")
    _, settings = pipeline.resolve_settings(strength="medium", max_iter=4)
    cores = torch.get_num_threads()
    seen = {}  # photo: the threads that protected it and the cores each used
    together = threading.Barrier(2, timeout=60)  # a and c each wait for the other at their first step: both at work

    def progress(sources, stage, step):
        seen.setdefault(sources[0].name, set()).add((threading.get_ident(), torch.get_num_threads()))
        if (sources[0].name, stage, step) in {("a.png", "step", 0), ("c.png", "step", 0)}:
            together.wait()

    results = list(pipeline.protect_files(
        pairs, [tiny_classifier], pipeline.Job(settings=settings, strength="medium", seed=0, batch_size=1, at_once=2),
        progress=progress))
    assert [r.source.name for r in results] == ["a.png", "b.jpg", "c.png", "d.png"] and results[1].error
    assert all(len(each) == 1 and next(iter(each))[1] == max(1, cores // 2) for each in seen.values())
    assert seen["a.png"] != seen["c.png"]  # two threads

    torch.set_num_threads(max(1, cores // 2))
    try:
        one = list(pipeline.protect_files(pipeline.output_pairs(find_images([folder]), tmp_path / "one"),
                                          [tiny_classifier], pipeline.Job(settings=settings, strength="medium",
                                                                          seed=0, batch_size=1, at_once=1)))
    finally:
        torch.set_num_threads(cores)
    for two_at_once, alone in zip(results, one, strict=True):
        assert (two_at_once.record is None) == (alone.record is None)
        if alone.record is not None:
            assert two_at_once.output.read_bytes() == alone.output.read_bytes()
            assert two_at_once.record["iterations"] == alone.record["iterations"]


@pytest.mark.skipif(shutil.which("butteraugli") is None, reason="needs butteraugli: apt-get install butteraugli")
def test_the_report_keeps_the_score_protect_measured_which_is_the_files_own(tmp_path, tiny_classifier, monkeypatch):
    """medium measures butteraugli as it eases the change: the writer does not measure it again, and the score is
    that of the original against the file as written (a JPEG: its own loss included)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.open(photo(tmp_path / "p.png", 0, size=(64, 48))).save(inputs / "p.jpg", quality=90)
    _, settings = pipeline.resolve_settings("n-fgsm", strength="medium", max_iter=30)  # the tiny model's goal in 13
    calls = []
    measure = metrics.butteraugli
    monkeypatch.setattr(metrics, "butteraugli", lambda *pair, **options: calls.append(1) or measure(*pair, **options))
    job = pipeline.Job(method="n-fgsm", settings=settings, strength="medium", seed=0)
    [result] = pipeline.protect_files(pipeline.output_pairs(find_images([inputs]), tmp_path / "out"),
                                      [tiny_classifier], job)
    assert result.record["success"] and result.output.suffix == ".jpg" and calls == []
    original, saved = load_photo(inputs / "p.jpg", torch.uint8).pixels, load_photo(result.output, torch.uint8).pixels
    assert result.record["butteraugli"] == measure(original.permute(1, 2, 0).numpy(), saved.permute(1, 2, 0).numpy())


def test_settings_follow_the_strength_and_the_options_given_win():
    assert pipeline.resolve_settings()[0] == "medium"
    assert pipeline.resolve_settings("fgsm")[0] == pipeline.resolve_settings(size="model")[0] == "paper"
    strength, settings = pipeline.resolve_settings(strength="medium", eps=0.01, robust=False)
    assert strength == "medium" and settings.eps == 0.01 and settings.robust  # the preset's robustness stays
    _, bounded = pipeline.resolve_settings(strength="low", max_perturbation=0.02)
    assert bounded.max_perturbation == 0.02 and bounded.texture_budget is None and bounded.texture_mask == 0.02
    _, bounded = pipeline.resolve_settings(strength="medium", max_perturbation=0.02)  # the budget's growth goes too
    assert bounded.max_perturbation == 0.02 and bounded.budget_growth is None and bounded.tighten is None
    with pytest.raises(ValueError, match="iterations=k applies to sog, fgsm and r-fgsm"):
        pipeline.resolve_settings("p-fgsm", iterations=3)
    with pytest.raises(ValueError, match="unknown strength"):
        pipeline.resolve_settings(strength="extreme")


def test_progress_follows_the_steps_of_each_batch(folder, tmp_path, tiny_classifier):
    """``progress(sources, stage, step)``: each batch's photos, its steps counted from 0, then the scaling down."""
    pairs = pipeline.output_pairs(find_images([folder]), tmp_path / "out")
    _, settings = pipeline.resolve_settings(strength="medium", max_iter=4)
    job = pipeline.Job(settings=settings, strength="medium", seed=0, batch_size=2)
    calls = []
    results = list(pipeline.protect_files(pairs, [tiny_classifier], job, progress=lambda *call: calls.append(call)))
    assert len(results) == 4
    batches = {tuple(path.name for path in sources) for sources, _, _ in calls}
    assert batches == {("a.png",), ("c.png",), ("d.png",)}  # one size per batch: c is smaller; b is no photo
    for batch in batches:
        steps = [step for sources, stage, step in calls if tuple(p.name for p in sources) == batch and stage == "step"]
        assert steps == list(range(len(steps))) and 1 <= len(steps) <= 5


def test_auto_format_writes_jpegs_for_jpegs_except_at_the_lossless_strength(tmp_path):
    """--format auto: a JPEG for a JPEG photo (the default, medium: a file to upload), a PNG for a PNG, and PNGs
    for every photo at low, whose change a JPEG's own loss would outweigh; an asked-for format wins."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.new("RGB", (16, 16)).save(inputs / "a.jpg")
    photo(inputs / "b.png", 0)

    def names(**job) -> list[str]:
        plan = pipeline.plan([inputs], tmp_path / "out", pipeline.Job(**job))
        return sorted(output.name for _, output in plan.pairs)

    assert names() == ["a.jpg", "b.png"]
    assert names(strength="low") == ["a.png", "b.png"]
    assert names(strength="low", format="jpeg") == ["a.jpg", "b.jpg"]
    assert names(strength="high", format="png") == ["a.png", "b.png"]
