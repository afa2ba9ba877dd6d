"""Issue 4 behaviour: full-resolution output, metadata, JPEG output, robustness views, verify."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import scenepriv
from conftest import EXAMPLES, make_tiny_classifier
from scenepriv import methods, reencode, transforms, verify
from scenepriv.attack import Goal, Views, sign_step_loop
from scenepriv.cli import main
from scenepriv.settings import RESAMPLERS


def run_cli(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def photo_with_metadata(tmp_path):
    """A real photo with EXIF (camera, orientation 6 = rotated, GPS position) and an sRGB ICC profile."""
    from PIL import ImageCms

    source = Image.open(EXAMPLES / "home.jpg").convert("RGB").resize((160, 120))
    exif = Image.Exif()
    exif[0x010F] = "ExampleCam"  # Make
    exif[0x0112] = 6  # Orientation: rotate 90 clockwise to display
    exif.get_ifd(0x8825)[2] = (51.0, 30.0, 0.0)  # GPSLatitude
    exif.get_ifd(0x8825)[1] = "N"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "in" / "tagged.jpg"
    path.parent.mkdir()
    source.save(path, exif=exif, icc_profile=icc, quality=95)
    return path, icc


def test_output_has_the_input_size_and_no_metadata_but_the_colour_profile(tmp_path, capsys, photo_with_metadata):
    path, icc = photo_with_metadata
    for kind, name in (("auto", "tagged.jpg"), ("png", "tagged.png")):  # a JPEG in: a JPEG by default, or a PNG
        code, out, err = run_cli(capsys, "protect", path, "-o", tmp_path / kind, "--method", "fgsm", "--seed", "0",
                                 "--format", kind)
        assert not [line for line in err.splitlines() if line.startswith("error:") and "not protected" not in line]
        with Image.open(tmp_path / kind / name) as image:
            assert image.size == (120, 160)  # the EXIF rotation is applied to the pixels, and the size kept
            assert not image.getexif()
            assert image.info.get("icc_profile") == icc
            assert not {"xmp", "XML:com.adobe.xmp", "exif"} & set(image.info)


def test_keep_metadata_keeps_the_camera_but_never_the_location(tmp_path, capsys, photo_with_metadata):
    path, _ = photo_with_metadata
    code, _, err = run_cli(capsys, "protect", path, "-o", tmp_path / "out", "--method", "fgsm", "--seed", "0",
                           "--keep-metadata")
    assert not [line for line in err.splitlines() if line.startswith("error:") and "not protected" not in line]
    with Image.open(tmp_path / "out" / "tagged.jpg") as image:
        exif = image.getexif()
        assert exif.get(0x010F) == "ExampleCam"
        assert 0x8825 not in exif and not exif.get_ifd(0x8825)
        assert exif.get(0x0112) in (None, 1)  # the pixels are already upright


def test_size_model_gives_the_paper_thumbnails_judged_as_the_jpeg_saved(tmp_path, capsys, embedded_classifier):
    """A JPEG output is judged as its file decodes: the report's final top-1 is the saved JPEG's."""
    shutil.copy(EXAMPLES / "home.jpg", tmp_path / "home.jpg")
    report = tmp_path / "r.jsonl"
    run_cli(capsys, "protect", tmp_path / "home.jpg", "-o", tmp_path / "out", "--method", "fgsm", "--size", "model",
            "--format", "jpeg", "--quality", "90", "--report", report)
    with Image.open(tmp_path / "out" / "home.jpg") as image:
        assert (image.format, image.size) == ("JPEG", (224, 224))
    [record] = [json.loads(line) for line in report.read_text().splitlines()]
    saved = scenepriv.images.load_photo(tmp_path / "out" / "home.jpg").pixels
    with torch.no_grad():
        assert int(embedded_classifier(saved[None]).argmax()) == record["final_top5"][0]["index"]


def test_resize_pipelines_and_differentiable_jpeg():
    x = torch.rand(2, 3, 60, 80, requires_grad=True)
    for resampler in transforms.RESAMPLERS:
        assert transforms.resize(x, (30, 40), resampler).shape == (2, 3, 30, 40)
    with pytest.raises(ValueError, match="resampler"):
        transforms.resize(x, (30, 40), "nearest-ish")
    compressed = transforms.jpeg(x, torch.tensor([25.0, 95.0]))
    assert compressed.shape == x.shape
    # quality 25 loses more than quality 95, and gradients flow back to the pixels
    assert (compressed[0] - x[0]).abs().mean() > (compressed[1] - x[1]).abs().mean()
    compressed.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("quality", [50, 75, 95])
def test_the_differentiable_jpeg_is_close_to_pillows(quality):
    """On a real photo (sides not whole blocks: edges replicated), the differentiable JPEG is nearer what Pillow's
    real JPEG decodes to than the photo itself is (measured: 0.2-0.5 of that distance)."""
    photo = Image.open(EXAMPLES / "home.jpg").convert("RGB")
    photo = photo.resize((203, round(203 * photo.height / photo.width)), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1).float()[None] / 255
    real = reencode.jpeg_round_trip(x[0], quality)[None]
    differentiable = transforms.jpeg(x, torch.tensor([float(quality)]))
    assert differentiable.shape == x.shape
    assert (differentiable - real).abs().mean() < 0.75 * (x - real).abs().mean()


def test_views_join_the_goal_an_image_stops_only_when_they_agree(tiny_classifier, random_images):
    """A view that shows the classifier a constant grey image can never reach a target: nothing stops early."""
    grey = lambda saved, rows: [torch.full_like(saved, 0.5)]  # noqa: E731
    labels = lambda probabilities: probabilities[0].topk(2).indices[:, 1]  # noqa: E731  the runner-up: reachable
    plain = sign_step_loop(random_images, tiny_classifier, Goal(labels, True, threshold=0.5), eps=0.01, max_iter=10)
    viewed = sign_step_loop(random_images, tiny_classifier, Goal(labels, True, threshold=0.5), eps=0.01, max_iter=10,
                            views=Views(judged=grey))
    grey_top1 = int(tiny_classifier(torch.full((1, 3, 32, 32), 0.5)).argmax())
    for i in range(len(random_images)):
        if int(viewed.labels[i]) != grey_top1:
            assert not viewed.success[i] and viewed.iterations[i] == 10
    assert plain.success.any()


def test_confirm_has_the_last_word_on_stopping(tiny_classifier, random_images):
    """An image whose goal is reached on the differentiable views still goes on until ``confirm`` accepts it."""
    labels = lambda probabilities: probabilities[0].topk(2).indices[:, 1]  # noqa: E731  the runner-up: reachable
    calls = []

    def reject_twice(saved, targets, rows):
        calls.append(len(saved))
        return torch.full((len(saved),), len(calls) > 2)

    plain = sign_step_loop(random_images, tiny_classifier, Goal(labels, True, threshold=0.5), eps=0.01, max_iter=10)
    confirmed = sign_step_loop(random_images, tiny_classifier, Goal(labels, True, threshold=0.5, confirm=reject_twice),
                               eps=0.01, max_iter=10)
    refuse = lambda saved, targets, rows: torch.zeros(len(saved), dtype=torch.bool)  # noqa: E731
    never = sign_step_loop(random_images, tiny_classifier, Goal(labels, True, threshold=0.5, confirm=refuse),
                           eps=0.01, max_iter=10)
    assert plain.success.any() and len(calls) >= 3
    assert (confirmed.iterations >= plain.iterations).all() and (confirmed.iterations > plain.iterations).any()
    assert not never.success.any() and (never.iterations == 10).all()


def test_robust_protection_holds_through_real_jpeg(embedded_classifier):
    photo = scenepriv.images.load_photo(EXAMPLES / "leuvenA.jpg").pixels
    classifier = scenepriv.load_classifier(resize="bilinear-antialias")
    result = scenepriv.protect(photo[None], classifier, "p-fgsm", seed=0, robust=True)
    assert result.images.shape == photo[None].shape and result.records[0]["success"]
    checks = verify.checks([25, 50], [0.5, 1.0], ["bilinear-antialias", "bicubic"])
    before = verify.top1_under_checks(classifier, photo, checks)
    after = verify.top1_under_checks(classifier, result.images[0], checks)
    assert sum(a != b for a, b in zip(before, after, strict=True)) >= len(checks) - 1
    # it stopped only once the target led on every real re-encoding that --robust confirms
    target = torch.tensor([result.records[0]["goal"]["classes"][0]["index"]])
    assert methods.holds_on_reencodings(classifier, result.images, target, targeted=True).all()


def test_verify_reports_every_check_against_the_original(tmp_path, capsys):
    shutil.copy(EXAMPLES / "home.jpg", tmp_path / "home.jpg")
    protected = tmp_path / "out"
    code = run_cli(capsys, "protect", tmp_path / "home.jpg", "-o", protected, "--seed", "1", "--strength", "medium")[0]
    assert code == 0
    code, out, err = run_cli(capsys, "verify", protected, "--original", tmp_path, "--jpeg", "50", "--scale", "1",
                             "--json")
    assert code == 0, err
    (result,) = json.loads(out)
    assert result["original"].endswith("home.jpg")
    assert [c["check"] for c in result["checks"]] == [c.name for c in verify.checks([50], [1.0])]
    saved = [c for c in result["checks"] if c["check"].startswith("saved")]
    assert all(c["holds"] and c["original_top1"] != c["top1"] for c in saved)
    code, out, _ = run_cli(capsys, "verify", protected, "--original", tmp_path, "--jpeg", "50", "--scale", "1")
    assert "home.jpg" in out and "share of files holding" in out


def test_verify_names_a_missing_original_and_goes_on(tmp_path, capsys):
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "orphan.png")
    (tmp_path / "originals").mkdir()
    code, _, err = run_cli(capsys, "verify", tmp_path / "orphan.png", "--original", tmp_path / "originals")
    assert code == 1 and "orphan" in err and "no original" in err


def test_the_confirmation_covers_every_check_a_robust_strength_promises():
    """What verify checks for medium and high (the file as saved included, through every resampler) is confirmed
    before a photo stops: a photo the loop calls protected cannot fail its own strength's verdict."""
    from scenepriv.settings import PRESETS, RESAMPLERS

    for name in ("medium", "high"):
        preset = PRESETS[name]
        assert preset.settings["robust"] and preset.all_resamplers
        promised = verify.checks(list(preset.jpeg), list(preset.scales), list(RESAMPLERS))
        assert set(promised) <= set(verify.ROBUST_CHECKS), name


def _held(model, image: torch.Tensor, label: torch.Tensor, checks: list) -> bool:
    """Whether ``label`` is the exact top-1 of ``image`` under every check, leading by the confirmation's margin."""
    with torch.no_grad():
        logits = model.exact(reencode.platform_versions(image, checks, model.input_size))
    return bool(((logits.argmax(1) == label) & methods.leads(logits)).all())


def test_the_confirmation_is_every_robust_check_on_every_model(tiny_classifier):
    """Checked quality by quality on the images still holding, the verdict is still: the goal holds under every
    check of ROBUST_CHECKS, on every model (here the goal is each image's own top-1 as saved: some keep it)."""
    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(24, 3, 6, 6, generator=generator), size=48, mode="bilinear")
    images = (smooth * 255).round() / 255  # smooth 8-bit images: JPEG keeps some of their top-1s, not all
    with torch.no_grad():
        labels = tiny_classifier.exact(images).argmax(1)
    for ensemble in ([tiny_classifier], [tiny_classifier, make_tiny_classifier(seed=1)]):
        expected = torch.tensor([all(_held(model, image, label, verify.ROBUST_CHECKS) for model in ensemble)
                                 for image, label in zip(images, labels, strict=True)])
        verdict = methods.holds_on_reencodings(ensemble, images, labels, targeted=True)
        assert torch.equal(verdict, expected)
        if len(ensemble) == 1:
            assert 0 < int(expected.sum()) < len(images)
            harshest = [check for check in verify.ROBUST_CHECKS if check.quality == 50]
            after_the_first_stage = torch.tensor([_held(tiny_classifier, image, label, harshest)
                                                  for image, label in zip(images, labels, strict=True)])
            assert bool((after_the_first_stage & ~expected).any())  # some fail only at a milder quality
        # Each image that fails names a check it does fail; tried first next time, the verdict stays the same
        failed = [None] * len(images)
        assert torch.equal(methods.holds_on_reencodings(ensemble, images, labels, targeted=True, failed=failed),
                           expected)
        for image, label, check, holds in zip(images, labels, failed, expected, strict=True):
            assert (check is None) is bool(holds)
            assert check is None or not all(_held(model, image, label, [check]) for model in ensemble)
        seen: list = []

        def recorded(*args, original=methods.platform_versions, seen=seen, **options):
            seen.append(args[1])
            return original(*args, **options)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(methods, "platform_versions", recorded)
            again = methods.holds_on_reencodings(ensemble, images, labels, targeted=True, failed=list(failed))
        assert torch.equal(again, expected)
        assert set(seen[0]) == {check for check in failed if check is not None}


class _Tied(torch.nn.Module):
    """Logits whose runner-up trails the top-1 by ``gap``: a verdict another machine's rounding could swap."""

    def __init__(self, network: torch.nn.Module, gap: float) -> None:
        super().__init__()
        self.network, self.gap = network, gap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network(x)
        top = logits.topk(2, dim=1)
        return logits.scatter(1, top.indices[:, 1:], top.values[:, :1] - self.gap)


def test_a_reencoding_counts_only_where_its_top1_leads_by_the_margin(tiny_classifier):
    """fp32 logits differ in their last bits with the cores that compute them, so ``verify`` on all the cores can
    swap two classes that the confirmation, on half of them, saw nearly tied: such a re-encoding does not count."""
    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(24, 3, 6, 6, generator=generator), size=48, mode="bilinear")
    images = (smooth * 255).round() / 255
    with torch.no_grad():
        labels = tiny_classifier.exact(images).argmax(1)
    plain = methods.holds_on_reencodings(tiny_classifier, images, labels, targeted=True)
    assert bool(plain.any())
    for gap, expected in ((methods.LEAD / 2, torch.zeros_like(plain)), (2 * methods.LEAD, plain)):
        tied = scenepriv.zoo.base.Classifier(_Tied(tiny_classifier.network, gap), name="tied",
                                             labels=tiny_classifier.labels, input_size=tiny_classifier.input_size,
                                             mean=(0.5,) * 3, std=(0.25,) * 3)
        assert torch.equal(methods.holds_on_reencodings(tied, images, labels, targeted=True), expected)


def test_a_platform_resize_makes_the_same_8_bit_photo_on_one_core_and_on_two():
    """Plain bilinear to half size averages 2x2 pixels: many results lie half a grey level between two, and on
    [0, 1] the last bit, which depends on the cores that compute it, decided them (the confirmation on one core and
    verify on two then judged two different JPEGs). Computed on whole levels, it is exact."""
    image = torch.randint(0, 256, (3, 240, 320), generator=torch.Generator().manual_seed(0)).float() / 255
    cores = torch.get_num_threads()
    made = {}
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            made[count] = [reencode.platform_versions(image, [reencode.Check(75, 0.5, resampler)], (32, 32))
                           for resampler in RESAMPLERS]
    finally:
        torch.set_num_threads(cores)
    assert all(torch.equal(one, two) for one, two in zip(made[1], made[2], strict=True))


@pytest.mark.parametrize("size", [48, 128])
def test_a_verdict_at_full_size_reencodes_the_file_alone(tiny_classifier, monkeypatch, size):
    """A photo worked on at full size and saved as a JPEG is judged on its file's re-encodings only (its working
    copy's would cost as much and decide nothing); one worked on smaller is first screened at the working size."""
    from scenepriv.images import JpegFormat
    from scenepriv.resolution import WorkingCopy
    from scenepriv.settings import Settings

    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)).mul(255).round().div(255)
    copy = WorkingCopy(images, 0.02, 64, [JpegFormat(90), JpegFormat(90)])
    confirm = methods._Confirmation([tiny_classifier], True, Settings(robust=True, threshold=0.01), copy)
    stages: list = []
    judged: list = []
    monkeypatch.setattr(methods, "holds_on_reencodings",
                        lambda *args, judge, factor=1, **options: stages.append((judge, factor)) or
                        judged.append(args[1]) or torch.ones(len(args[1]), dtype=torch.bool))
    with torch.no_grad():
        goals = tiny_classifier(copy.as_saved(copy.work, torch.arange(2))).argmax(1)
    assert confirm(copy.work, goals, torch.arange(2)).all()
    assert stages == ([("exact", 1)] if size < 64 else [("fast", 2), ("exact", 1)])
    stages.clear()
    judged.clear()
    confirm(copy.work, goals, torch.arange(2), exact=False)  # a search's guide: the first stage alone, by the fast path
    assert stages == [("fast", copy.factor)]
    # working smaller, the working copy; at full size, the file as saved (its own JPEG is part of what is re-encoded,
    # and changes it: the two are told apart)
    as_saved = copy.as_saved(copy.work, torch.arange(2))
    assert copy.factor > 1 or not torch.equal(as_saved, copy.work)
    assert torch.equal(judged[0], copy.work if copy.factor > 1 else as_saved)
