"""scenepriv serve in a real browser: Debian's headless Chromium driven by Selenium, as a person uses the page.

SCENEPRIV_SCREENSHOT=docs/serve.png also writes the README's screenshot of the results.
"""

import os
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import torch
import uvicorn
from PIL import Image

from scenepriv import load_classifier
from scenepriv.images import load_photo
from scenepriv.serve import bound_socket, create_app, other_model_names
from test_serve import as_served, small_copy

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver; .ci/run installs them)")
PHOTOS = ("friends_by_Aitzol_Berasategi.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg")


@pytest.fixture
def served_classifier(embedded_classifier):
    return as_served(embedded_classifier)


@pytest.fixture
def server(served_classifier):
    """The page on a free port of 127.0.0.1, served by uvicorn in a thread, with the embedded model (and, for the
    README's screenshot, checks on the other Lite models installed, as `scenepriv serve` has them)."""
    others = {}
    if os.environ.get("SCENEPRIV_SCREENSHOT"):
        others = {name: partial(load_classifier, name, device="cpu", resize=served_classifier.resize)
                  for name in other_model_names([served_classifier.name])}
    app = create_app([served_classifier], other_models=others, seed=0, allowed_hosts=["127.0.0.1"])
    listening = bound_socket("127.0.0.1", 0)
    running = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=running.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{listening.getsockname()[1]}/", app
    running.should_exit = True
    thread.join(timeout=60)
    listening.close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--no-default-browser-check", "--window-size=1100,1400",
                     f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def top1(classifier, pixels: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(classifier(pixels[None].to(classifier.device)).argmax())


def focus_ring(browser) -> tuple[str, float]:
    """The outline drawn around the file picker's button: its style and width in px."""
    style, width = browser.execute_script("const style = getComputedStyle(document.querySelector('#drop .button'));"
                                          "return [style.outlineStyle, style.outlineWidth]")
    return style, float(width.removesuffix("px"))


def test_a_person_protects_two_photos_sees_a_broken_one_named_and_downloads_them(
        server, browser, served_classifier, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, app = server
    photos = [small_copy(name, tmp_path) for name in PHOTOS]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a photo")

    browser.get(url)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "input[name=strength]"), 30, "the strengths")
    assert browser.find_element(By.CSS_SELECTOR, "input[name=strength]:checked").get_attribute("value") == "medium"
    about = browser.find_element(By.ID, "classifier").text
    assert "protects against an ImageNet classifier, which names objects" in about
    assert "scenepriv serve --model resnet50-places365" in about
    assert "do not see" not in browser.find_element(By.TAG_NAME, "header").text

    # The keyboard reaches the file picker first; its focus is a ring around the "choose photos" button.
    assert focus_ring(browser)[0] == "none"
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "files"
    style, width = focus_ring(browser)
    assert style == "solid" and width >= 3

    browser.find_element(By.ID, "files").send_keys("\n".join(str(path) for path in [*photos, broken]))
    chosen = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#chosen li")]
    assert len(chosen) == 3
    for text, photo in zip(chosen, photos, strict=False):  # photos of 20-60 KB: not "0.0 MB"
        assert f" {round(photo.stat().st_size / 1024)} KB" in text, text
    start = browser.find_element(By.ID, "start")
    assert start.is_enabled()
    start.click()

    # The progress moves while a photo is protected: its step count rises, and so does its bar.
    state = browser.find_element(By.ID, "job-state")
    steps, bars = [], []
    deadline = time.monotonic() + 600
    while not state.text.startswith("Done"):
        assert time.monotonic() < deadline, "the job did not finish"
        first = browser.find_elements(By.CSS_SELECTOR, "article.photo")[:1]
        if first:  # the words and the bar read in one call: the page may move on to the shrink between two calls
            shown, bar = browser.execute_script(
                "return [arguments[0].querySelector('.state').textContent,"
                " arguments[0].querySelector('progress.steps').value]", first[0])
            if shown.startswith("protecting… step "):
                steps.append(int(shown.split()[2]))
                assert shown.endswith(" of at most 100"), shown  # medium's most steps
                bars.append(float(bar))
        time.sleep(0.2)
    assert len(set(steps)) >= 2 and steps == sorted(steps), steps
    assert bars[-1] > bars[0] > 0, bars
    assert state.text == "Done: 2 of 3 photos protected; below each, what it holds against"

    cards = browser.find_elements(By.CSS_SELECTOR, "article.photo")
    assert [card.get_attribute("data-state") for card in cards] == ["done", "done", "failed"]
    assert cards[2].find_element(By.CSS_SELECTOR, "p.error").text == "broken.jpg: not an image Pillow can read"
    results = [file["result"] for file in app.state.store.view(next(iter(app.state.store.jobs.values())))["files"]]
    for card, result in zip(cards[:2], results, strict=False):
        assert card.get_attribute("data-verdict") == result["verdict"]["level"] in ("holds", "partly")
        assert card.find_element(By.CSS_SELECTOR, ".state").text == result["verdict"]["badge"]
        verdict = card.find_element(By.CSS_SELECTOR, "p.verdict").text
        assert verdict == result["verdict"]["text"]
        assert verdict.startswith("Holds against the classifier it was protected against")
        assert card.find_element(By.CSS_SELECTOR, "p.visibility").text == result["visibility"]
        images = card.find_elements(By.CSS_SELECTOR, ".frame img")
        wait_for(lambda images=images: all(browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image) for image in images), 30, "crops")
        # The jargon is folded away: shown only once the details are opened.
        for word in ("top-1", "PSNR", "utteraugli", "iterations", "efficientnet", "x0.5"):
            assert word not in card.text, word
        details = card.find_element(By.CSS_SELECTOR, "details.details")
        assert details.get_attribute("open") is None and details.find_element(By.TAG_NAME, "summary").text == (
            "Technical details")
        assert not details.find_element(By.TAG_NAME, "table").is_displayed()

    if os.environ.get("SCENEPRIV_SCREENSHOT"):
        screenshot(browser, Path(os.environ["SCENEPRIV_SCREENSHOT"]))

    details = cards[0].find_element(By.CSS_SELECTOR, "details.details")
    details.find_element(By.TAG_NAME, "summary").click()
    assert details.find_element(By.TAG_NAME, "table").is_displayed()
    assert "efficientnet-lite0 (protected against)" in details.text and "Butteraugli" in details.text
    assert "Top-1 of efficientnet-lite0 before:" in details.text

    # The zip first, then a photo alone: the downloads stay, with the time the server deletes them.
    assert "keeps these photos until" in browser.find_element(By.ID, "kept").text
    browser.find_element(By.ID, "zip").click()
    bundle = browser.downloads / "scenepriv-protected.zip"
    wait_for(lambda: bundle.exists() and not list(browser.downloads.glob("*.crdownload")), 60, "the zip")
    link = cards[0].find_element(By.CSS_SELECTOR, "a.download")
    wait_for(lambda: "downloaded" in cards[0].text, 10, "the page to say the photo was downloaded")
    assert link.is_displayed() and browser.find_element(By.ID, "zip").is_displayed()
    assert "keeps these photos until" in browser.find_element(By.ID, "kept").text
    assert link.get_attribute("download") == "friends_by_Aitzol_Berasategi.jpg"
    link.click()
    saved = browser.downloads / "friends_by_Aitzol_Berasategi.jpg"
    wait_for(lambda: saved.exists() and not list(browser.downloads.glob("*.crdownload")), 60, "the download")
    image = Image.open(saved)
    assert image.format == "JPEG" and not image.getexif() and "exif" not in image.info
    protected, original = load_photo(saved).pixels, load_photo(photos[0]).pixels
    assert protected.shape == original.shape
    assert top1(served_classifier, protected) != top1(served_classifier, original)
    assert Image.open(photos[0]).getexif()  # the original had EXIF (and GPS): the download has none

    # "Delete now": the files leave the server, and the page offers no download any more.
    store = app.state.store
    browser.find_element(By.ID, "forget").click()
    wait_for(lambda: state.text == "Deleted from the server.", 10, "the deletion")
    assert store.jobs == {} and list(store.root.iterdir()) == []
    assert not [link for link in browser.find_elements(By.CSS_SELECTOR, "a.download, #zip") if link.is_displayed()]
    assert "downloaded" not in cards[0].text


def screenshot(browser, path: Path) -> None:
    """The results of the first photo, as a palette PNG small enough for the README."""
    from selenium.webdriver.common.by import By

    browser.set_window_size(1000, 1500)
    browser.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(path))
    bottom = browser.find_elements(By.CSS_SELECTOR, "article.photo")[0].rect
    image = Image.open(path).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, int(bottom["y"] + bottom["height"] + 16))))
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
