"""scenepriv serve: the web page's server, through FastAPI's TestClient (the page itself: test_browser.py)."""

import copy
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from conftest import EXAMPLES, make_tiny_classifier
from scenepriv.images import load_photo
from scenepriv.serve import bound_socket, create_app, is_loopback, run
from scenepriv.serve.app import REQUEST_HEADER, STATIC, safe_name
from scenepriv.settings import ScenePrivError
from scenepriv.zoo import resize_policy

HEADERS = {REQUEST_HEADER: "1"}  # what the page sends with every request that changes something
PHOTOS = ("life_by_Aitzol_Berasategi.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg")  # quick to protect


def small_copy(name: str, folder: Path, side: int = 400) -> Path:
    """An example photo shrunk to ``side`` px (the tests stay quick) with EXIF, GPS included, to be stripped."""
    image = Image.open(EXAMPLES / name).convert("RGB")
    image.thumbnail((side, side))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "TestCamera", "Model X"  # Make, Model
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (41.0, 24.0, 0.0)
    path = folder / name
    image.save(path, quality=95, exif=exif)
    assert Image.open(path).getexif()
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    return [small_copy(name, folder) for name in PHOTOS]


def files_of(*paths: Path, broken: bytes | None = None) -> list:
    files = [("files", (path.name, path.read_bytes(), "image/jpeg")) for path in paths]
    if broken is not None:
        files.append(("files", ("broken.jpg", broken, "image/jpeg")))
    return files


def finished(client: TestClient, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/api/jobs/{job_id}").json()
        if view["state"] == "done":
            return view
        time.sleep(0.2)
    raise AssertionError(f"job not finished after {timeout} s: {view}")


def top1(classifier, pixels: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(classifier(pixels[None].to(classifier.device)).argmax())


def jpeg_without_metadata(data: bytes) -> Image.Image:
    """A JPEG upload comes back a JPEG (a file to share), with no EXIF, GPS or XMP."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    assert not image.getexif() and "exif" not in image.info and "xmp" not in image.info
    return image


def as_served(classifier):
    """The embedded classifier as `scenepriv serve` loads it, for full-size photos (no second copy of its weights)."""
    served = copy.copy(classifier)
    served.resize = resize_policy("full")
    return served


@pytest.fixture(scope="module")
def served_classifier(embedded_classifier):
    return as_served(embedded_classifier)


@pytest.fixture(scope="module")
def embedded_client(served_classifier):
    app = create_app([served_classifier], other_models={"tiny": make_tiny_classifier}, seed=0)
    with TestClient(app) as client:
        yield client
    assert not app.state.service.root.exists()  # the server stopped: every photo deleted


@pytest.fixture
def tiny_app():
    app = create_app([make_tiny_classifier()], seed=0, max_upload_mb=0.2, max_photos=4)
    with TestClient(app) as client:
        yield app, client


def test_two_photos_protected_checked_and_downloaded_without_metadata_and_a_broken_file_named(
        embedded_client, served_classifier, photos, tmp_path):
    client = embedded_client
    answer = client.post("/api/jobs", files=files_of(*photos, broken=b"\xff\xd8 not a photo"),
                         data={"strength": "low"}, headers=HEADERS)
    assert answer.status_code == 201, answer.text
    job = answer.json()
    service = client.app.state.service
    folder = service.jobs[job["id"]].folder
    assert folder.is_dir() and folder.parent == service.root
    broken = job["files"][2]
    assert broken["state"] == "failed" and broken["message"] == "broken.jpg: not an image Pillow can read"

    view = finished(client, job["id"])
    assert [file["state"] for file in view["files"]] == ["done", "done", "failed"]
    for file, photo in zip(view["files"][:2], photos, strict=True):
        result = file["result"]
        original = load_photo(photo).pixels
        assert result["before"]["index"] == top1(served_classifier, original)
        assert result["success"] and result["after"]["index"] != result["before"]["index"]
        assert [verdict["model"] for verdict in result["checks"]] == ["efficientnet-lite0", "tiny"]
        labels = [check["check"] for check in result["checks"][0]["checks"]]
        assert labels == ["as saved, full size", "as saved, x0.5", "JPEG 75, full size", "JPEG 75, x0.5",
                          "JPEG 50, full size", "JPEG 50, x0.5"]
        assert result["checks"][0]["checks"][0]["holds"]  # the file as saved, on the model protected against
        before, after = (Image.open(io.BytesIO(client.get(result["crop"][which]).content)) for which in
                         ("before", "after"))
        crop, (width, height) = result["crop"], Image.open(photo).size
        assert before.size == after.size == (crop["width"], crop["height"]) == (min(width, 384), min(height, 384))
        assert (np.asarray(before) != np.asarray(after)).any()
        expected = np.asarray(Image.open(photo).convert("RGB"))[crop["top"]:crop["top"] + crop["height"],
                                                                 crop["left"]:crop["left"] + crop["width"]]
        assert (np.asarray(before) == expected).all()  # the original's region, at 100%

    # One photo alone, then all as a zip: the second download deletes the job's folder.
    first = client.get(view["files"][0]["download"])
    assert first.status_code == 200
    assert 'filename="life_by_Aitzol_Berasategi.jpg"' in first.headers["content-disposition"]
    jpeg_without_metadata(first.content)
    assert folder.is_dir()
    bundle = client.get(view["zip"])
    assert bundle.status_code == 200
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as archive:
        names = [Path(photo.name).with_suffix(".jpg").name for photo in photos]
        assert sorted(archive.namelist()) == sorted(names)
        assert archive.read(names[0]) == first.content
        for name, photo in zip(names, photos, strict=True):
            jpeg_without_metadata(archive.read(name))
            (tmp_path / name).write_bytes(archive.read(name))
            protected, original = load_photo(tmp_path / name).pixels, load_photo(photo).pixels
            assert protected.shape == original.shape
            assert top1(served_classifier, protected) != top1(served_classifier, original)
    assert not folder.exists()
    after = client.get(f"/api/jobs/{job['id']}").json()
    assert after["files_removed"] and after["zip"] is None and after["files"][0]["download"] is None
    gone = client.get(view["files"][1]["download"])
    assert gone.status_code == 410 and "deleted" in gone.json()["detail"]


def test_a_file_too_large_or_of_another_type_is_refused_with_its_reason(tiny_app, tmp_path):
    app, client = tiny_app
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    large = io.BytesIO()
    Image.fromarray(noise).save(large, format="PNG")  # ~270 KB, over the 0.2 MB limit
    answer = client.post("/api/jobs", files=[("files", ("big.png", large.getvalue(), "image/png"))], headers=HEADERS)
    assert answer.status_code == 413
    assert answer.json()["detail"] == ("nothing to protect: big.png: larger than the 0.2 MB a photo may have here "
                                       "(scenepriv serve --max-upload-mb)")
    answer = client.post("/api/jobs", files=[("files", ("notes.txt", b"hello", "text/plain"))], headers=HEADERS)
    assert answer.status_code == 400
    assert answer.json()["detail"] == ("nothing to protect: notes.txt: not a photo this page takes "
                                       "(JPEG, PNG, HEIC, WebP only)")
    # The extension is not enough: a text file named .jpg is not a photo.
    answer = client.post("/api/jobs", files=[("files", ("fake.jpg", b"hello", "image/jpeg"))], headers=HEADERS)
    assert answer.status_code == 400 and "fake.jpg: not an image Pillow can read" in answer.json()["detail"]
    assert client.post("/api/jobs", files=files_of(*[EXAMPLES / "home.jpg"] * 5), headers=HEADERS).status_code == 400
    answer = client.post("/api/jobs", data={"strength": "low"}, headers=HEADERS)
    assert answer.status_code == 400 and "no photos" in answer.json()["detail"]
    answer = client.post("/api/jobs", files=files_of(EXAMPLES / "home.jpg"), data={"strength": "extreme"},
                         headers=HEADERS)
    assert answer.status_code == 400 and "unknown strength 'extreme'" in answer.json()["detail"]
    # Without the page's header (a form posted by another site): refused before anything is read.
    assert client.post("/api/jobs", files=files_of(EXAMPLES / "home.jpg")).status_code == 403
    assert app.state.service.jobs == {} and list(app.state.service.root.iterdir()) == []


def test_a_body_larger_than_the_limit_is_refused_while_it_arrives(tiny_app):
    app, client = tiny_app
    limit = app.state.service.max_upload_bytes * app.state.service.max_photos + 2**20

    def chunks():
        for _ in range(limit // 2**20 + 2):
            yield b"x" * 2**20

    answer = client.post("/api/jobs", content=chunks(),
                         headers={**HEADERS, "Content-Type": "multipart/form-data; boundary=b"})
    assert answer.status_code == 413 and "larger than" in answer.json()["detail"]


def test_two_jobs_at_once_both_complete_each_with_its_own_photos(tiny_app, photos):
    app, client = tiny_app
    answers: dict[str, dict] = {}

    def submit(photo: Path) -> None:
        answers[photo.name] = client.post("/api/jobs", files=files_of(photo), headers=HEADERS).json()

    tabs = [threading.Thread(target=submit, args=(photo,)) for photo in photos]
    for tab in tabs:
        tab.start()
    for tab in tabs:
        tab.join()
    views = {name: finished(client, answer["id"]) for name, answer in answers.items()}
    assert len({answer["id"] for answer in answers.values()}) == 2
    for name, view in views.items():
        assert [file["name"] for file in view["files"]] == [name]
        assert view["files"][0]["state"] == "done"
        assert client.get(view["files"][0]["download"]).status_code == 200
    assert list(app.state.service.root.iterdir()) == []  # each job's only photo downloaded: deleted


def test_a_finished_job_expires_and_its_photos_are_deleted(photos):
    app = create_app([make_tiny_classifier()], seed=0, expiry_s=0.5)
    with TestClient(app) as client:
        job = client.post("/api/jobs", files=files_of(photos[1]), headers=HEADERS).json()
        assert finished(client, job["id"])["expires_in"] <= 1
        folder = app.state.service.jobs[job["id"]].folder
        assert folder.is_dir()
        time.sleep(0.6)
        app.state.service.sweep()
        assert not folder.exists()
        answer = client.get(f"/api/jobs/{job['id']}")
        assert answer.status_code == 404 and "expired" in answer.json()["detail"]
        assert client.get(f"/api/jobs/{job['id']}/zip").status_code == 404
        root = app.state.service.root
    assert not root.exists()


def test_deleted_from_the_page_while_it_runs_leaves_no_photo(tiny_app, photos):
    app, client = tiny_app
    service = app.state.service
    job = client.post("/api/jobs", files=files_of(*photos), headers=HEADERS).json()
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 403  # not from the page
    while service.jobs[job["id"]].state == "waiting":
        time.sleep(0.05)
    assert client.delete(f"/api/jobs/{job['id']}", headers=HEADERS).status_code == 204
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    deadline = time.monotonic() + 120
    while service.pending or any(service.root.iterdir()):  # the worker stops after the photo it is on
        assert time.monotonic() < deadline, list(service.root.rglob("*"))
        time.sleep(0.1)


def test_uploaded_names_cannot_leave_the_job_folder():
    assert safe_name("../../etc/passwd.jpg", "x") == "passwd.jpg"
    assert safe_name("..\\..\\windows\\x.png", "x") == "x.png"
    assert safe_name(".hidden.jpg", "x") == "hidden.jpg"
    assert safe_name("a\nb\x1b[31m.jpg", "x") == "a_b__31m.jpg"
    assert safe_name("..", "photo-1") == safe_name("", "photo-1") == "photo-1"
    assert safe_name(".jpg", "photo-2") == "jpg"
    assert safe_name("été à Bilbao.heic", "x") == "été à Bilbao.heic"
    assert len(safe_name("a" * 300 + ".jpg", "x")) <= 100 and safe_name("a" * 300 + ".jpg", "x").endswith(".jpg")


def test_two_uploads_of_one_name_are_both_kept(tiny_app, photos):
    app, client = tiny_app
    photo = photos[1]
    files = [("files", ("../" + photo.name, photo.read_bytes(), "image/jpeg")),
             ("files", (photo.name, photo.read_bytes(), "image/jpeg"))]
    job = client.post("/api/jobs", files=files, headers=HEADERS).json()
    folder = app.state.service.jobs[job["id"]].folder
    stem = Path(photo.name).stem
    assert [file["name"] for file in job["files"]] == [photo.name, f"{stem}-2.jpg"]
    assert sorted(path.name for path in (folder / "uploads").iterdir()) == sorted([photo.name, f"{stem}-2.jpg"])
    view = finished(client, job["id"])
    assert [file["output_name"] for file in view["files"]] == [f"{stem}.jpg", f"{stem}-2.jpg"]


def test_the_page_loads_nothing_from_elsewhere(tiny_app):
    _, client = tiny_app
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC / name).read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), name  # no CDN, no fonts
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert asset.startswith(("/static/", "data:")), asset
        if asset.startswith("/static/"):
            assert client.get(asset).status_code == 200
    config = client.get("/api/config").json()
    assert config["strength"] == "medium" and [s["name"] for s in config["strengths"]][:3] == ["low", "medium", "high"]
    assert {".jpg", ".png", ".heic", ".webp"} <= set(config["formats"])


def test_hosts_other_than_this_computer_are_warned_about_and_a_port_in_use_is_one_line():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("example.org")
    taken = bound_socket("127.0.0.1", 0)
    try:
        warnings: list[str] = []
        with pytest.raises(ScenePrivError, match=r"cannot listen on 0\.0\.0\.0 port \d+: .*choose another --port"):
            run([], host="0.0.0.0", port=taken.getsockname()[1], warn=warnings.append)
        assert "not a loopback address" in warnings[0]
    finally:
        taken.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_command_serves_the_page_and_stops_on_ctrl_c(tmp_path):
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "scenepriv", "serve", "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.communicate()
            try:
                config = httpx.get(f"http://127.0.0.1:{port}/api/config", timeout=5).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.5)
        assert config["models"] == ["efficientnet-lite0"] and config["strength"] == "medium"
        assert [path.name[:16] for path in tmp_path.glob("scenepriv*")] == ["scenepriv-serve-"]  # its temporary folder
        # Another Host than this computer's names (a DNS-rebinding page) is not answered.
        assert httpx.get(f"http://127.0.0.1:{port}/api/config", headers={"Host": "evil.example"}).status_code == 400
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in out and "stopped" in out and "warning" not in err
    assert "Traceback" not in err and "ERROR" not in err, err  # Ctrl+C is how it stops, not an error
    assert list(tmp_path.glob("scenepriv*")) == []  # deleted on the way out


def test_serve_help_names_its_options():
    out = subprocess.run([sys.executable, "-m", "scenepriv", "serve", "--help"], capture_output=True, text=True,
                         timeout=120).stdout
    for option in ("--port", "--host", "--model", "--device", "--strength", "--max-upload-mb"):
        assert option in out
