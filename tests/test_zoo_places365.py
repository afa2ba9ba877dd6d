"""Places365 weights: download through a local HTTP server, checksums, cache reuse, failures, key renaming.

No test touches the internet: ``SCENEPRIV_PLACES365_URL`` points at a server on 127.0.0.1 serving a
random-init ResNet-18 checkpoint in the official format, and ``SCENEPRIV_CACHE_DIR`` at a temporary folder.
Download, checksum and network failures raise :class:`WeightsUnavailable`; a file that does not fit the
architecture raises ``ValueError``.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
from importlib import resources
from pathlib import Path

import pytest
import torch
import torchvision

import scenepriv.zoo as zoo
from scenepriv.zoo import places365
from scenepriv.zoo.cache import WeightsUnavailable
from scenepriv.zoo.places365 import convert_state_dict

FILE = "resnet18_places365.pth.tar"


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 serving ``files`` (URL path -> bytes) and logging requests."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        self.truncate = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # Truncated: promise the whole file, send half, then the connection closes (HTTP/1.0).
                self.wfile.write(body[: len(body) // 2] if server.truncate else body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models/"

    def close(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=365).state_dict()


@pytest.fixture(scope="module")
def checkpoint(weights: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in the official format: DataParallel's ``module.`` prefix inside ``state_dict``."""
    path = tmp_path_factory.mktemp("official") / FILE
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}, "epoch": 1}, path)
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCENEPRIV_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def server(cache: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    local = LocalServer({f"/models/{FILE}": checkpoint.read_bytes()})
    request.addfinalizer(local.close)
    monkeypatch.setenv("SCENEPRIV_PLACES365_URL", local.url)
    return local


def cached_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/models/"


def assert_same_weights(network: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    state = network.state_dict()
    assert state.keys() == weights.keys()
    for key, tensor in weights.items():
        assert torch.equal(state[key], tensor), key


def test_download_loads_the_served_weights(server, cache, checkpoint, weights, capsys):
    where, offline = places365.weights_status("resnet18")
    assert not offline and server.url + FILE in where

    classifier = zoo.load_classifier("resnet18-places365", fold_batch_norm=False)  # compare the tensors as served

    assert server.requests == [f"/models/{FILE}"]
    assert len(classifier.labels) == 365
    logits = classifier(torch.rand(2, 3, 300, 200))
    assert logits.shape == (2, 365)
    assert_same_weights(classifier.network, weights)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert (cache / f"{FILE}.sha256").read_text().split()[0] == digest
    assert cached_files(cache) == [FILE, f"{FILE}.sha256"]
    assert "trusted on first use" in capsys.readouterr().err
    assert places365.weights_status("resnet18") == (str(cache / FILE), True)


def test_checksum_mismatch_is_rejected_and_nothing_is_kept(server, cache, checkpoint, monkeypatch):
    monkeypatch.setitem(places365.KNOWN_SHA256, "resnet18", "0" * 64)
    with pytest.raises(WeightsUnavailable, match="checksum") as caught:
        places365.build("resnet18", None)
    assert "0" * 64 in str(caught.value)
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() in str(caught.value)
    assert cached_files(cache) == []


def test_cached_copy_is_reused_without_network(server, cache, weights):
    places365.build("resnet18", None)
    server.close()
    network = places365.build("resnet18", None)
    assert server.requests == [f"/models/{FILE}"]
    assert_same_weights(network, weights)


def test_damaged_cached_copy_is_an_error_naming_it(server, cache):
    places365.build("resnet18", None)
    with (cache / FILE).open("r+b") as file:
        file.write(b"X")
    with pytest.raises(WeightsUnavailable, match="Delete it") as caught:
        places365.build("resnet18", None)
    assert str(cache / FILE) in str(caught.value)


def test_redownload_is_checked_against_the_recorded_hash(server, cache):
    places365.build("resnet18", None)
    (cache / FILE).unlink()
    server.files[f"/models/{FILE}"] = b"a different file"
    with pytest.raises(WeightsUnavailable, match="recorded"):
        places365.build("resnet18", None)
    assert cached_files(cache) == [f"{FILE}.sha256"]


def test_interrupted_transfer_leaves_no_file(server, cache):
    server.truncate = True
    with pytest.raises(WeightsUnavailable, match="interrupted") as caught:
        places365.build("resnet18", None)
    assert places365.url("resnet18") in str(caught.value)
    assert cached_files(cache) == []


def test_http_error_is_reported(server, cache):
    with pytest.raises(WeightsUnavailable, match="404") as caught:
        places365.build("alexnet", None)
    assert "--weights" in str(caught.value)
    assert cached_files(cache) == []


def test_no_network_names_the_url_and_the_way_out(cache, monkeypatch):
    monkeypatch.setenv("SCENEPRIV_PLACES365_URL", closed_port_url())
    with pytest.raises(WeightsUnavailable) as caught:
        zoo.load_classifier("resnet18-places365")
    message = str(caught.value)
    assert places365.url("resnet18") in message and "--weights" in message
    assert cached_files(cache) == []


def test_local_weights_file_needs_no_server(cache, checkpoint, weights, monkeypatch):
    monkeypatch.setenv("SCENEPRIV_PLACES365_URL", closed_port_url())
    classifier = zoo.load_classifier("resnet18-places365", weights=str(checkpoint), fold_batch_norm=False)
    assert_same_weights(classifier.network, weights)
    assert cached_files(cache) == []


def test_plain_state_dict_loads(cache, weights, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(weights, path)
    assert_same_weights(places365.build("resnet18", str(path)), weights)


def test_checkpoint_that_does_not_fit_names_the_file(cache, weights, tmp_path):
    path = tmp_path / "partial.pt"
    torch.save({k: v for k, v in weights.items() if not k.startswith("fc.")}, path)
    with pytest.raises(ValueError, match="missing keys") as caught:
        places365.build("resnet18", str(path))
    assert str(path) in str(caught.value) and "fc.weight" in str(caught.value)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=re.escape(str(garbage))):
        places365.build("resnet18", str(garbage))

    with pytest.raises(WeightsUnavailable, match="not found"):
        places365.build("resnet18", str(tmp_path / "missing.pt"))


def test_key_renaming_examples():
    old = ["module.features.denseblock1.denselayer1.norm.1.weight",
           "module.features.denseblock4.denselayer24.conv.2.weight",
           "module.features.transition1.norm.running_mean",
           "features.module.0.weight", "classifier.1.bias", "module.layer1.0.conv1.weight",
           "head.submodule.weight"]
    new = ["features.denseblock1.denselayer1.norm1.weight",
           "features.denseblock4.denselayer24.conv2.weight",
           "features.transition1.norm.running_mean",
           "features.0.weight", "classifier.1.bias", "layer1.0.conv1.weight",
           "head.submodule.weight"]
    assert list(convert_state_dict(dict.fromkeys(old))) == new


def test_official_alexnet_and_densenet161_keys_map_onto_torchvision():
    with torch.device("meta"):
        alexnet = list(torchvision.models.alexnet(num_classes=365).state_dict())
        densenet = list(torchvision.models.densenet161(num_classes=365).state_dict())
    # AlexNet was trained with only ``features`` wrapped in DataParallel.
    official_alexnet = [k.replace("features.", "features.module.", 1) for k in alexnet]
    assert official_alexnet != alexnet
    assert list(convert_state_dict(dict.fromkeys(official_alexnet))) == alexnet
    official_densenet = ["module." + re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k)
                         for k in densenet]
    assert any(".norm.1." in k for k in official_densenet)
    assert list(convert_state_dict(dict.fromkeys(official_densenet))) == densenet


def test_labels_follow_the_file():
    names = places365.labels()
    assert len(names) == 365 and names[0] == "airfield"
    assert not any(name.startswith("/") for name in names)
    assert "bus_station/indoor" in names
    text = (resources.files("scenepriv") / "data" / "categories_places365.txt").read_text()
    for line in text.splitlines():
        name, index = line.split()
        assert names[int(index)] == name[3:]


def test_mirror_option_downloads_from_the_mirror(server, cache, monkeypatch, capsys):
    """``--mirror URL``: the official server is often down; the same file from elsewhere, checked the same way."""
    from scenepriv.cli import main

    monkeypatch.delenv("SCENEPRIV_PLACES365_URL")
    photo = Path(__file__).resolve().parent.parent / "examples" / "photos" / "home.jpg"

    code = main(["classify", str(photo), "--model", "resnet18-places365", "--mirror", server.url, "--top", "1"])

    assert code == 0 and server.requests == [f"/models/{FILE}"]
    assert cached_files(cache) == [FILE, f"{FILE}.sha256"]
