"""Surrogates trained for transfer: the training script end to end, the file format, the shipped weights, the
frontier script (docs/transfer-surrogates.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import scenepriv
from scenepriv import zoo
from scenepriv.zoo import MODELS, snapshots, surrogates
from scenepriv.zoo.cache import WeightsUnavailable, sha256_of

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "photos"
# the held-out photos of docs/transfer-surrogates.md, by file name in their packages (lake_001 is hfs/data/001.jpg)
HELD_OUT = {"Bridge_by_Sander_Klootwijk", "Dune", "building", "aero1", "scenetext06", "dog", "horses", "kite"}


def run(*arguments: str, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """An LGV surrogate of Lite0 trained for 3 steps on the example photos: the script end to end."""
    folder = tmp_path_factory.mktemp("surrogate")
    out, log = folder / "lite0-lgv.npz", folder / "train.jsonl"
    run(str(ROOT / "tools" / "train_surrogate.py"), "--smoke", "--corpus", str(EXAMPLES), "--out", str(out),
        "--log", str(log), "--threads", "2")
    summary = [json.loads(line) for line in log.read_text().splitlines()][-1]
    return out, summary


def test_training_writes_a_collection_of_snapshots_that_load_as_one_classifier(trained):
    path, summary = trained
    assert summary["kind"] == "train" and summary["method"] == "lgv" and summary["smoke"]
    assert summary["steps"] == 3 and summary["snapshots"] == 2
    assert summary["trained_photos"] + summary["aside_photos"] == len(list(EXAMPLES.glob("*.jpg")))
    assert all(0 <= share <= 1 for share in summary["agreement_with_original"])
    meta = snapshots.read_meta(path)
    assert meta["base_variant"] == 0 and meta["snapshots"] == 2 and meta["base_rounding"] == "fp16"
    network = snapshots.build(path)
    assert isinstance(network, snapshots.SnapshotEnsemble) and len(network.members) == 2
    # the snapshots moved away from the original weights, and from each other
    original = scenepriv.load_classifier("efficientnet-lite0").network
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        first, second = (member.eval()(x) for member in network.members)
        assert not torch.allclose(first, second)
        assert not torch.allclose(first, original(x), atol=1e-4)


def test_a_snapshot_ensemble_cycles_its_members_for_gradients_and_averages_them_to_judge():
    members = [nn.Linear(3, 2) for _ in range(3)]
    ensemble = snapshots.SnapshotEnsemble(members)
    x = torch.randn(4, 3, requires_grad=True)
    for turn in range(4):  # each gradient pass runs the next member
        assert torch.equal(ensemble(x), members[turn % 3](x))
    with torch.no_grad():
        assert torch.allclose(ensemble(x), torch.stack([m(x) for m in members]).mean(0))


def test_the_file_stores_each_snapshot_close_to_its_weights(tmp_path):
    base = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    snapshot = {name: tensor + 0.01 * torch.randn_like(tensor) if tensor.is_floating_point() else tensor
                for name, tensor in base.state_dict().items()}
    path = tmp_path / "s.npz"
    snapshots.save(path, base.state_dict(), [snapshot], {"base_variant": 0})
    (rebuilt,) = snapshots.snapshot_states(path, base.state_dict())
    for name, tensor in snapshot.items():
        if tensor.ndim <= 1:  # vectors (batch-norm statistics, biases) whole
            assert torch.equal(rebuilt[name], tensor.float()), name
        else:  # weights within half a step of 1/15 of each output channel's largest change
            change = (tensor - base.state_dict()[name].half().float()).flatten(1).abs().amax(1)
            error = (rebuilt[name] - tensor).flatten(1).abs().amax(1)
            assert bool((error <= change / snapshots.LEVELS / 2 + 1e-6).all()), name


def test_a_surrogate_file_with_a_wrong_checksum_is_refused_before_it_is_read(trained, tmp_path):
    path, _ = trained
    with pytest.raises(WeightsUnavailable, match="SHA-256"):
        snapshots.build(path, sha256="0" * 64)
    snapshots.build(path, sha256=sha256_of(path))  # the right one loads


def register(monkeypatch, name: str, path: Path, variant: int) -> None:
    """``path`` as shipped surrogate ``name``, as an entry of surrogates.SHIPPED and of the zoo would make it."""
    monkeypatch.setitem(surrogates.SHIPPED, name, (path.name, variant, sha256_of(path), "a test surrogate"))
    monkeypatch.setattr(surrogates, "shipped_path", lambda _: path)
    monkeypatch.setitem(MODELS, name, zoo.surrogate_spec(name))


def test_each_shipped_surrogate_is_the_file_its_hash_names():
    for name, (_, _, sha256, _) in surrogates.SHIPPED.items():
        assert sha256_of(surrogates.shipped_path(name)) == sha256, name


def test_a_shipped_surrogate_loads_offline_with_its_checksum_checked(trained, monkeypatch, tmp_path):
    path, _ = trained
    copy = tmp_path / "efficientnet-lite0-test.npz"
    copy.write_bytes(path.read_bytes())
    register(monkeypatch, "efficientnet-lite0-test", copy, 0)
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: pytest.fail("a shipped surrogate needs no network"))
    assert zoo.MODELS["efficientnet-lite0-test"].weights_status() == (str(copy), True)
    classifier = scenepriv.load_classifier("efficientnet-lite0-test")
    assert classifier.input_size == MODELS["efficientnet-lite0"].input_size
    with torch.no_grad():
        assert classifier(torch.rand(1, 3, 64, 80)).shape == (1, 1000)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 1  # one bit of the weights changed after the hash was recorded
    copy.write_bytes(bytes(data))
    with pytest.raises(WeightsUnavailable, match="SHA-256"):
        scenepriv.load_classifier("efficientnet-lite0-test")


def test_the_frontier_script_runs_its_smoke_test_and_summarises_it(trained, tmp_path):
    path, _ = trained
    output = tmp_path / "frontier.jsonl"
    run(str(ROOT / "benchmarks" / "frontier.py"), "--smoke", "--limit", "1", "--surrogate",
        "stock=efficientnet-lite0", "--surrogate", f"lgv={path}", "--setting", "transfer", "--json", str(output))
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(line["surrogate"], line["setting"]) for line in lines] == [("stock", "transfer"), ("lgv", "transfer")]
    for line in lines:
        assert line["judge"] == "efficientnet-lite2" and isinstance(line["judge_changed"], bool)
        assert line["iterations"] >= 1 and line["psnr"] > 0
    summary = run(str(ROOT / "benchmarks" / "frontier.py"), "--table", str(output)).stdout
    assert "| photos | stock | transfer | efficientnet-lite2 |" in summary


def test_the_photo_list_keeps_the_held_out_photos_out_and_names_a_licence_for_each():
    rows = [line.split("\t") for line in (ROOT / "tools" / "surrogate_photos.tsv").read_text().splitlines()
            if line and not line.startswith("#")]
    assert rows and all(len(row) == 4 and row[0] in ("corpus", "tuning") and row[3] for row in rows)
    examples = {example.stem for example in EXAMPLES.glob("*.jpg")}
    for _, _, path, _ in rows:
        assert Path(path).stem not in HELD_OUT | examples and not path.endswith("hfs/data/001.jpg"), path
    corpus = {path for kind, _, path, _ in rows if kind == "corpus"}
    assert not corpus & {path for kind, _, path, _ in rows if kind == "tuning"}
