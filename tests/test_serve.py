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
from scenepriv.cli import main
from scenepriv.images import load_photo
from scenepriv.serve import bound_socket, create_app, is_loopback, run
from scenepriv.serve.app import REQUEST_HEADER, STATIC
from scenepriv.serve.uploads import safe_name
from scenepriv.serve.wording import verdict, visibility, where
from scenepriv.settings import ScenePrivError
from scenepriv.verify import Check
from scenepriv.zoo import resize_policy

ROOT = Path(__file__).resolve().parents[1]

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


def png_without_metadata(data: bytes) -> Image.Image:
    """At low (for files shared as they are) a JPEG upload comes back a PNG (lossless: a JPEG's own loss would show
    more than the change), with no EXIF, GPS or XMP. (At the default, medium, a JPEG: tests/test_browser.py.)"""
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
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
    assert not app.state.store.root.exists()  # the server stopped: every photo deleted


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
    assert job["max_steps"] == 200  # low's most steps: the page's progress "step N of at most 200"
    store = client.app.state.store
    folder = store.jobs[job["id"]].folder
    assert folder.is_dir() and folder.parent == store.root
    broken = job["files"][2]
    assert broken["state"] == "failed" and broken["message"] == "broken.jpg: not an image Pillow can read"

    view = finished(client, job["id"])
    assert [file["state"] for file in view["files"]] == ["done", "done", "failed"]
    for file, photo in zip(view["files"][:2], photos, strict=True):
        result = file["result"]
        original = load_photo(photo).pixels
        assert result["before"]["index"] == top1(served_classifier, original)
        assert result["success"] and result["after"]["index"] != result["before"]["index"]
        assert [(verdict["model"], verdict["protected_against"]) for verdict in result["checks"]] == [
            ("efficientnet-lite0", True), ("tiny", False)]
        labels = [check["check"] for check in result["checks"][0]["checks"]]
        assert labels == ["as saved, full size", "as saved, half size", "JPEG 75, full size", "JPEG 75, half size",
                          "JPEG 50, full size", "JPEG 50, half size"]
        assert result["checks"][0]["checks"][0]["holds"]  # the file as saved, on the model protected against
        # The plain verdict counts what the checks found: the tiny model's rows are the "other classifiers".
        tiny = [row["holds"] for row in result["checks"][1]["checks"]]
        plain = result["verdict"]
        assert plain["level"] in ("holds", "partly") and plain["text"].startswith(
            "Holds against the classifier it was protected against")
        assert (f"Other classifiers still recognise the photo in {tiny.count(False)} of 6 checks." in plain["text"]
                if not all(tiny) else "do not recognise it either, in all 6 checks." in plain["text"])
        assert plain["badge"] == (f"holds in {result['holds']} of 12 checks" if result["holds"] < 12
                                  else "holds in all 12 checks")
        assert result["visibility"] == visibility(result["butteraugli"])
        before, after = (Image.open(io.BytesIO(client.get(result["crop"][which]).content)) for which in
                         ("before", "after"))
        crop, (width, height) = result["crop"], Image.open(photo).size
        assert before.size == after.size == (crop["width"], crop["height"]) == (min(width, 384), min(height, 384))
        assert (np.asarray(before) != np.asarray(after)).any()
        expected = np.asarray(Image.open(photo).convert("RGB"))[crop["top"]:crop["top"] + crop["height"],
                                                                 crop["left"]:crop["left"] + crop["width"]]
        assert (np.asarray(before) == expected).all()  # the original's region, at 100%

    # One photo alone, then all as a zip, then both again: downloads do not delete the job's files.
    first = client.get(view["files"][0]["download"])
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert 'filename="life_by_Aitzol_Berasategi.png"' in first.headers["content-disposition"]
    png_without_metadata(first.content)
    bundle = client.get(view["zip"])
    assert bundle.status_code == 200
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as archive:
        names = [Path(photo.name).with_suffix(".png").name for photo in photos]
        assert sorted(archive.namelist()) == sorted(names)
        assert archive.read(names[0]) == first.content
        for name, photo in zip(names, photos, strict=True):
            png_without_metadata(archive.read(name))
            (tmp_path / name).write_bytes(archive.read(name))
            protected, original = load_photo(tmp_path / name).pixels, load_photo(photo).pixels
            assert protected.shape == original.shape
            assert top1(served_classifier, protected) != top1(served_classifier, original)
    assert client.get(view["zip"]).content == bundle.content
    assert client.get(view["files"][0]["download"]).content == first.content
    assert sorted(path.name for path in folder.iterdir()) == ["crops", "protected", "uploads"]  # no zip left behind
    again = client.get(f"/api/jobs/{job['id']}").json()
    assert not again["files_removed"] and again["zip"] == view["zip"] and again["expires_in"] > 0
    assert [file["downloaded"] for file in again["files"]] == [True, True, False]
    assert [file["download"] for file in again["files"]] == [file["download"] for file in view["files"]]

    # "Delete now": the files go, the job with them.
    assert client.delete(f"/api/jobs/{job['id']}", headers=HEADERS).status_code == 204
    assert not folder.exists()
    for gone in (client.get(view["files"][1]["download"]), client.get(view["zip"])):
        assert gone.status_code == 404 and "no such job" in gone.json()["detail"]


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
    assert app.state.store.jobs == {} and list(app.state.store.root.iterdir()) == []


def test_a_body_larger_than_the_limit_is_refused_while_it_arrives(tiny_app):
    app, client = tiny_app
    limit = app.state.limits.max_request_bytes
    assert limit == int(0.2 * 2**20) * 4 + 2**20

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
    # Each job's photos stay after their download (to download again) until deleted from the page or expired.
    store = app.state.store
    assert sorted(path.name for path in store.root.iterdir()) == sorted(answer["id"] for answer in answers.values())
    for answer in answers.values():
        assert client.delete(f"/api/jobs/{answer['id']}", headers=HEADERS).status_code == 204
    assert list(store.root.iterdir()) == []


def test_a_finished_job_expires_and_its_photos_are_deleted(photos):
    app = create_app([make_tiny_classifier()], seed=0, expiry_s=0.5)
    with TestClient(app) as client:
        job = client.post("/api/jobs", files=files_of(photos[1]), headers=HEADERS).json()
        assert finished(client, job["id"])["expires_in"] <= 1
        folder = app.state.store.jobs[job["id"]].folder
        assert folder.is_dir()
        time.sleep(0.6)
        app.state.store.sweep()
        assert not folder.exists()
        answer = client.get(f"/api/jobs/{job['id']}")
        assert answer.status_code == 404 and "expired" in answer.json()["detail"]
        assert client.get(f"/api/jobs/{job['id']}/zip").status_code == 404
        root = app.state.store.root
    assert not root.exists()


def test_deleted_from_the_page_while_it_runs_leaves_no_photo(tiny_app, photos):
    app, client = tiny_app
    store = app.state.store
    job = client.post("/api/jobs", files=files_of(*photos), headers=HEADERS).json()
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 403  # not from the page
    while store.jobs[job["id"]].state == "waiting":
        time.sleep(0.05)
    assert client.delete(f"/api/jobs/{job['id']}", headers=HEADERS).status_code == 204
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    deadline = time.monotonic() + 120
    while store.pending or any(store.root.iterdir()):  # the worker stops after the photo it is on
        assert time.monotonic() < deadline, list(store.root.rglob("*"))
        time.sleep(0.1)


def test_a_model_that_cannot_be_loaded_is_left_out_through_warn_not_print(photos, capsys):
    def broken():
        raise ScenePrivError("weights not installed")

    warnings: list[str] = []
    app = create_app([make_tiny_classifier()], other_models={"broken": broken}, seed=0, warn=warnings.append)
    with TestClient(app) as client:
        view = finished(client, client.post("/api/jobs", files=files_of(photos[1]), headers=HEADERS).json()["id"])
    assert [verdict["model"] for verdict in view["files"][0]["result"]["checks"]] == ["tiny"]
    assert warnings == ["scenepriv serve: model broken left out of the checks: weights not installed"]
    assert capsys.readouterr() == ("", "")


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
    folder = app.state.store.jobs[job["id"]].folder
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
    assert config["models"] == ["tiny"] and config["names"] is None  # neither ImageNet's 1000 classes nor places


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


# --- what the page says ---------------------------------------------------------------------------------------------

CHECKS = [Check(quality, scale, "area") for quality in (None, 75, 50) for scale in (1.0, 0.5)]


def judged(model: str, holds: list[bool], protected_against: bool) -> dict:
    return {"model": model, "protected_against": protected_against, "checks": [{"holds": hold} for hold in holds]}


def test_the_verdict_says_which_checks_hold_on_which_classifiers():
    every = [True] * 6
    plain = verdict(CHECKS, [judged("a", every, True), judged("b", [True, False, True, False, False, True], False),
                             judged("c", [False] * 6, False)], "medium")
    assert plain == {"level": "partly", "badge": "holds in 9 of 18 checks", "text":
                     "Holds against the classifier it was protected against: as saved and after a site's JPEG "
                     "re-encoding, at full and half size. Other classifiers still recognise the photo in 9 of 12 "
                     "checks."}
    plain = verdict(CHECKS, [judged("a", every, True), judged("b", every, False)], "medium")
    assert plain["level"] == "holds" and plain["badge"] == "holds in all 12 checks"
    assert plain["text"].endswith("The other classifiers checked (1) do not recognise it either, in all 6 checks.")
    # Low holds on the file as saved, not through re-encoding: said, with the strengths that do.
    plain = verdict(CHECKS, [judged("a", [True, True, False, False, False, False], True)], "low")
    assert plain["level"] == "partly" and plain["text"] == (
        "Holds against the classifier it was protected against as saved, at full and half size; it does not hold "
        "after a site's JPEG re-encoding, at full and half size. A site that re-encodes or shrinks photos may undo "
        "it: for such sites, protect it again at strength medium or high. No other classifier was checked: others "
        "may still recognise the photo.")
    plain = verdict(CHECKS, [judged("a", [True, True, False, False, True, False], True)], "medium")
    assert plain["text"].startswith(
        "Holds against the classifier it was protected against as saved, at full and half size, and after JPEG "
        "re-encoding at quality 50, at full size; it does not hold after JPEG re-encoding at quality 75, at full and "
        "half size, and after JPEG re-encoding at quality 50, at half size. A site that re-encodes or shrinks photos "
        "may undo it: for such sites, protect it again at strength high.")
    plain = verdict(CHECKS, [judged("a", [False] * 6, True), judged("b", every, True)], "high")
    assert plain["level"] == "fails" and plain["badge"] == "not protected"
    assert plain["text"].startswith("Does not hold: the 2 classifiers it was protected against still recognise the "
                                    "photo, even as saved. No other")  # nothing stronger than high to suggest


def test_the_checks_in_words_and_the_visibility_in_words():
    assert where(CHECKS, [True, False] * 3) == "as saved and after a site's JPEG re-encoding, at full size"
    assert where(CHECKS, [False, False, True, True, False, False]) == (
        "after JPEG re-encoding at quality 75, at full and half size")
    assert visibility(None) == "Compare below how visible the change is."
    assert visibility(0.9).startswith("The change should not be noticeable")
    assert "ordinary JPEG" in visibility(1.4) and "strong JPEG" in visibility(2.6)
    assert "can be seen up close" in visibility(3.22)  # not "not visible"


def test_a_scene_classifier_is_named_as_one():
    places = make_tiny_classifier()
    places.name = "resnet50-places365"
    with TestClient(create_app([places])) as client:
        assert client.get("/api/config").json()["names"] == "scenes"
    imagenet = make_tiny_classifier(num_classes=1000)
    with TestClient(create_app([imagenet])) as client:
        assert client.get("/api/config").json()["names"] == "objects"


# --- the serve extra --------------------------------------------------------------------------------------------------

def test_fastapi_and_uvicorn_come_with_the_serve_extra_only():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    web = ("fastapi", "uvicorn", "python-multipart")
    assert not [need for need in project["dependencies"] if need.startswith(web)]
    assert sorted(need.split(">")[0] for need in project["optional-dependencies"]["serve"]) == sorted(web)
    assert "serve" in project["optional-dependencies"]["test"][0]  # scenepriv[...,serve]


@pytest.mark.parametrize("missing", ["fastapi", "uvicorn", "python_multipart"])
def test_serve_without_the_extra_says_which_to_install_in_one_line(monkeypatch, capsys, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed: import raises ModuleNotFoundError
    if missing == "python_multipart":
        monkeypatch.setitem(sys.modules, "multipart", None)  # its former name
    monkeypatch.setattr("scenepriv.commands._models", lambda *args: pytest.fail("models loaded first"))
    assert main(["serve", "--port", "0"]) == 1
    err = capsys.readouterr().err
    name = {"python_multipart": "python-multipart"}.get(missing, missing)
    assert err == (f"error: scenepriv serve needs {name}, which this installation lacks: "
                   "pip install 'scenepriv[serve]'\n")


def test_help_models_and_the_serve_package_do_not_import_fastapi():
    code = ("import contextlib, sys\nfrom scenepriv.cli import main\n"
            "for argv in (['--help'], ['serve', '--help']):\n"
            "    with contextlib.suppress(SystemExit):\n        main(argv)\n"
            "main(['models'])\nimport scenepriv.serve\n"
            "assert not {'fastapi', 'uvicorn', 'starlette'} & set(sys.modules), 'imported'\n"
            "scenepriv.serve.create_app\nassert 'fastapi' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
