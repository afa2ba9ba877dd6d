"""The classifier's speed options (bf16 autocast, channels-last, torch.compile) keep what the attack sees."""

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import scenepriv
from conftest import EXAMPLES, make_tiny_classifier
from scenepriv.attack import quantise, straight_through_quantise
from scenepriv.images import load_photo
from scenepriv.zoo import Classifier, base, bf16_is_fast, compile_problem, resize_to_input


@pytest.fixture(scope="module")
def thumbnails() -> torch.Tensor:
    photos = [load_photo(path).pixels for path in sorted(EXAMPLES.glob("*.jpg"))]
    return quantise(torch.cat([resize_to_input(p[None], (224, 224), "bilinear") for p in photos]))


def logits_and_gradient(classifier: Classifier, images: torch.Tensor, targets: torch.Tensor):
    """What one iteration of the engine uses: logits of the 8-bit image, gradient of the targeted loss."""
    x = images.clone().requires_grad_(True)
    logits = classifier(straight_through_quantise(x))
    (gradient,) = torch.autograd.grad(F.cross_entropy(logits, targets, reduction="sum"), x)
    return logits.detach(), gradient


@pytest.fixture(scope="module")
def fp32_reference(embedded_classifier, thumbnails):
    targets = torch.arange(len(thumbnails)) * 150 + 7
    return targets, *logits_and_gradient(embedded_classifier, thumbnails, targets)


def test_channels_last_computes_the_same_function(thumbnails, fp32_reference):
    targets, logits, gradient = fp32_reference
    classifier = scenepriv.load_classifier("efficientnet-lite0", channels_last=True)
    fast_logits, fast_gradient = logits_and_gradient(classifier, thumbnails, targets)
    torch.testing.assert_close(fast_logits, logits, atol=1e-4, rtol=1e-4)
    assert (fast_gradient - gradient).norm() / gradient.norm() < 1e-3  # only the summation order differs
    assert (fast_gradient.sign() == gradient.sign()).float().mean() > 0.999


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_keeps_the_top1_and_most_gradient_signs(thumbnails, fp32_reference, channels_last):
    targets, logits, gradient = fp32_reference
    classifier = scenepriv.load_classifier("efficientnet-lite0", precision="bf16", channels_last=channels_last)
    assert classifier.autocast_dtype(torch.device("cpu")) == torch.bfloat16
    fast_logits, fast_gradient = logits_and_gradient(classifier, thumbnails, targets)
    assert fast_logits.dtype == torch.float32  # the engine's softmax and stopping test stay in fp32
    assert torch.equal(fast_logits.argmax(1), logits.argmax(1))
    agreement = (fast_gradient.sign() == gradient.sign()).float().mean((1, 2, 3))
    assert (agreement > 0.75).all(), agreement  # about 0.83 measured; a random sign would give 0.5


def test_auto_precision_follows_the_hardware():
    classifier = scenepriv.load_classifier("efficientnet-lite0", precision="auto")
    expected = torch.bfloat16 if bf16_is_fast("cpu") else None
    assert classifier.autocast_dtype(torch.device("cpu")) == expected
    assert scenepriv.load_classifier("efficientnet-lite0").autocast_dtype(torch.device("cpu")) is None


def test_autocast_leaves_a_float64_network_exact(random_images):
    """The engine's exact tests use float64 networks; bf16 autocast never touches float64 operations."""
    exact, autocast = make_tiny_classifier(), make_tiny_classifier()
    autocast.precision = "bf16"
    assert torch.equal(autocast(random_images), exact(random_images))


def test_options_are_validated():
    with pytest.raises(ValueError, match="precision 'fp16'"):
        scenepriv.load_classifier("efficientnet-lite0", precision="fp16")
    with pytest.raises(TypeError, match="channels_last"):
        make_classifier(channels_last="yes")
    with pytest.raises(TypeError, match="compile"):
        make_classifier(compile=1)


def make_classifier(**options) -> Classifier:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(4, 5))
    return Classifier(network, name="small", labels=list("abcde"), input_size=(16, 16), mean=(0.5,) * 3,
                      std=(0.25,) * 3, **options)


def test_compile_gives_the_eager_logits_and_gradients(monkeypatch):
    if compile_problem("cpu"):
        pytest.skip(compile_problem("cpu"))
    # Inductor's code generation takes a minute on 2 cores; the aot_eager backend traces the same
    # forward and backward graphs (what can break) without generating code.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    images = torch.rand(3, 3, 20, 20)
    results = []
    for compiled in (False, True):
        x = images.clone().requires_grad_(True)
        logits = make_classifier(compile=compiled)(x)
        results.append((logits, *torch.autograd.grad(logits[:, 1].sum(), x)))
    torch.testing.assert_close(results[1], results[0])


def test_compile_is_refused_in_one_line_without_a_compiler(monkeypatch):
    monkeypatch.setattr(base.shutil, "which", lambda name: None)
    compile_problem.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"^compile=True: .*C\+\+ compiler.*compile=False$"):
            scenepriv.load_classifier("efficientnet-lite0", compile=True)
        classifier = make_classifier(compile=True)  # built elsewhere, refused at its first call
        with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):
            classifier(torch.rand(1, 3, 16, 16))
    finally:
        compile_problem.cache_clear()
