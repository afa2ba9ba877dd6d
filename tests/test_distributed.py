"""The Ray backend on a local two-CPU cluster started here: real photos (small copies of examples/photos), the
outputs and report records of the local pipeline, a worker killed mid-run, a re-run, a broken file, the CLI."""

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from scenepriv import distributed, pipeline
from scenepriv.images import find_images
from scenepriv.zoo import Models

ray = pytest.importorskip("ray", reason="the cluster extra: pip install 'scenepriv[cluster]'")

from conftest import EXAMPLES  # noqa: E402

SETTINGS = {"strength": "paper", "max_iter": 10}  # uniform steps: few iterations, so real photos stay quick
BATCH_SIZE = 2
BROKEN = "j_broken.jpg"  # sorts between home.jpg and leuvenA.jpg: it splits a run of same-sized photos


def job() -> pipeline.Job:
    strength, settings = pipeline.resolve_settings(**SETTINGS)
    return pipeline.Job(settings=settings, strength=strength, seed=0, batch_size=BATCH_SIZE)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The six example photos at 320x240 (friends: 240x320) and a broken JPEG: with batches of two, the local
    pipeline splits the photos by size, by the broken file and by the batch size."""
    folder = tmp_path_factory.mktemp("photos")
    for path in sorted(EXAMPLES.iterdir()):
        with Image.open(path) as image:
            size = (320, 240) if image.width > image.height else (240, 320)
            image.convert("RGB").resize(size).save(folder / path.name, quality=92)
    (folder / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


@pytest.fixture(scope="module")
def local(photos, tmp_path_factory) -> dict[str, dict]:
    """The local pipeline's run on the photos: output bytes and report record per source name."""
    out = tmp_path_factory.mktemp("local")
    pairs = pipeline.output_pairs(find_images([photos]), out / "protected")
    report = pipeline.Report(str(out / "report.jsonl"))
    results = list(pipeline.protect_files(pairs, Models().load("full"), job(), report=report))
    report.close()
    assert [r.source.name for r in results if r.error] == [BROKEN]
    return {r.source.name: {"bytes": r.output.read_bytes(), "record": r.record, "output": r.output.name}
            for r in results if r.record}


def without_run(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in ("run", "file", "output")}


def report_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("uri", [False, True], ids=["folder", "file URI"])
def test_the_cluster_groups_photos_as_the_local_pipeline(photos, uri):
    pairs = distributed.find_pairs([f"file://{photos}" if uri else photos], "out")
    assert [Path(s).name for s, _ in pairs] == sorted(p.name for p in photos.iterdir())
    names = [[Path(pairs[i][0]).name for i in batch] for batch in distributed.local_batches(pairs, job())]
    assert names == [["aitzgorri_by_Aitzol_Berasategi.jpg"], ["friends_by_Aitzol_Berasategi.jpg"], ["home.jpg"],
                     [BROKEN], ["leuvenA.jpg", "life_by_Aitzol_Berasategi.jpg"],
                     ["picosdeeuropa_by_Aitzol_Berasategi.jpg"]]


def test_outputs_and_records_equal_the_local_pipeline_and_a_broken_file_is_one_error(cluster, photos, local,
                                                                                     tmp_path):
    report = tmp_path / "report.jsonl"
    run = distributed.protect_dataset(photos, tmp_path / "out", job=job(), report=str(report),
                                      cluster=distributed.Cluster(workers=2))

    errors = [r for r in run.results if r.error]
    assert len(errors) == 1 and errors[0].source.name == BROKEN and BROKEN in errors[0].error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(v["output"] for v in local.values())
    records = report_lines(report)
    assert sorted(Path(r["file"]).name for r in records) == sorted(local)
    assert len({r["run"] for r in records}) == 1
    for record in records:
        expected = local[Path(record["file"]).name]
        assert Path(record["output"]).read_bytes() == expected["bytes"]  # byte for byte
        assert without_run(record) == without_run(expected["record"])
        assert record["file"] == str(photos / Path(record["file"]).name)


def test_a_killed_worker_is_retried_and_every_photo_is_done_once(cluster, photos, local, tmp_path):
    marker = tmp_path / "killed"
    pairs = distributed.find_pairs([photos], tmp_path / "out")
    report = pipeline.Report(str(tmp_path / "report.jsonl"))
    results = list(distributed.protect_pairs(pairs, job(), cluster=distributed.Cluster(workers=1), report=report,
                                             _exit_after_first_photo=str(marker)))
    report.close()

    assert marker.exists()  # the worker did die after its first photo
    assert sorted(r.source.name for r in results) == sorted(p.name for p in photos.iterdir())  # each once
    records = report_lines(tmp_path / "report.jsonl")
    assert sorted(Path(r["file"]).name for r in records) == sorted(local)  # each photo reported once
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(v["output"] for v in local.values())  # no temporary file left
    for record in records:
        assert Path(record["output"]).read_bytes() == local[Path(record["file"]).name]["bytes"]


def test_a_rerun_skips_the_photos_already_reported_and_remote_paths_go_through_pyarrow(cluster, photos, local,
                                                                                         tmp_path):
    """file:// URIs take the remote path (fetch into a temporary folder, one write per output)."""
    source, destination = f"file://{photos}", f"file://{tmp_path / 'out'}"
    report = tmp_path / "report.jsonl"
    first = ["aitzgorri_by_Aitzol_Berasategi.jpg", "friends_by_Aitzol_Berasategi.jpg", "home.jpg"]
    report.write_text("".join(json.dumps({**local[name]["record"], "file": f"{source}/{name}"}) + "\n"
                              for name in first) + '{"file": "cut off by a kill')

    run = distributed.protect_dataset(source, destination, job=job(), report=str(report))

    assert run.skipped == [f"{source}/{name}" for name in first]
    assert sorted(Path(r.source).name for r in run.results) == [BROKEN, "leuvenA.jpg",
                                                               "life_by_Aitzol_Berasategi.jpg",
                                                               "picosdeeuropa_by_Aitzol_Berasategi.jpg"]
    assert [r.error for r in run.results if r.error] and all(r.output.startswith("file://") for r in run.results)
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == ["leuvenA.jpg", "life_by_Aitzol_Berasategi.jpg",
                                         "picosdeeuropa_by_Aitzol_Berasategi.jpg"]
    for path in written:  # the remaining photos form the local pipeline's last batches: the same bytes
        assert path.read_bytes() == next(v["bytes"] for v in local.values() if v["output"] == path.name)
    lines = report.read_text().splitlines()
    assert lines[len(first)] == '{"file": "cut off by a kill'  # kept, and ended: the next record is whole
    records = [json.loads(line) for line in lines[len(first) + 1:]]
    assert [r["output"] for r in records] == [f"{destination}/{p.name}" for p in written]


def test_the_command_line_protects_on_the_cluster(cluster, photos, local, tmp_path, capsys):
    from scenepriv.cli import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("aitzgorri_by_Aitzol_Berasategi.jpg", "friends_by_Aitzol_Berasategi.jpg"):  # one photo a batch
        shutil.copy(photos / name, inputs / name)
    code = main(["protect", str(inputs), "-o", str(tmp_path / "out"), "--ray", "--workers", "1",
                 "--batch-size", str(BATCH_SIZE), "--seed", "0", "--strength", SETTINGS["strength"],
                 "--max-iter", str(SETTINGS["max_iter"]), "--report", str(tmp_path / "report.jsonl")])
    printed = capsys.readouterr().out

    assert code == (0 if all(local[name]["record"]["success"] for name in os.listdir(inputs)) else 1)
    assert "photos                2" in printed and "not saved             0" in printed
    for name in os.listdir(inputs):
        assert (tmp_path / "out" / local[name]["output"]).read_bytes() == local[name]["bytes"]
    assert len(report_lines(tmp_path / "report.jsonl")) == 2
