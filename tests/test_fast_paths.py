"""The classifier's speed options (bf16 autocast, channels-last, torch.compile) keep what the attack sees."""

import functools
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import scenepriv
from conftest import EXAMPLES, make_tiny_classifier
from scenepriv import speed
from scenepriv.attack import quantise, straight_through_quantise
from scenepriv.images import load_photo
from scenepriv.speed import bf16_is_fast, compile_problem, depthwise_gradients_in_fp32, fold_batch_norms
from scenepriv.transforms import resize_to_input
from scenepriv.zoo import Classifier


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
def plain_reference(thumbnails):
    """The network as published: fp32, contiguous, batch norms unfolded."""
    classifier = scenepriv.load_classifier("efficientnet-lite0", precision="fp32", channels_last=False,
                                           fold_batch_norm=False)
    targets = torch.arange(len(thumbnails)) * 150 + 7
    return targets, *logits_and_gradient(classifier, thumbnails, targets)


def test_fp32_fast_paths_compute_the_same_function(thumbnails, plain_reference):
    targets, logits, gradient = plain_reference
    classifier = scenepriv.load_classifier("efficientnet-lite0", precision="fp32", fold_batch_norm=True)
    assert classifier.channels_last and not any(isinstance(m, nn.BatchNorm2d) for m in classifier.network.modules())
    fast_logits, fast_gradient = logits_and_gradient(classifier, thumbnails, targets)
    torch.testing.assert_close(fast_logits, logits, atol=1e-3, rtol=1e-3)
    assert (fast_gradient - gradient).norm() / gradient.norm() < 1e-2  # only the rounding differs (3e-3 measured)
    assert (fast_gradient.sign() == gradient.sign()).float().mean() > 0.999


def test_bf16_keeps_the_top1_and_most_gradient_signs(thumbnails, plain_reference):
    targets, logits, gradient = plain_reference
    classifier = scenepriv.load_classifier("efficientnet-lite0", precision="bf16")
    assert classifier.autocast_dtype(torch.device("cpu")) == torch.bfloat16
    fast_logits, fast_gradient = logits_and_gradient(classifier, thumbnails, targets)
    assert fast_logits.dtype == torch.float32  # the engine's softmax and stopping test stay in fp32
    assert torch.equal(fast_logits.argmax(1), logits.argmax(1))
    agreement = (fast_gradient.sign() == gradient.sign()).float().mean((1, 2, 3))
    assert (agreement > 0.75).all(), agreement  # about 0.83 measured; a random sign would give 0.5


def test_auto_precision_follows_the_hardware():
    expected = torch.bfloat16 if bf16_is_fast("cpu") else None
    assert make_classifier(precision="auto").autocast_dtype(torch.device("cpu")) == expected
    assert make_classifier().autocast_dtype(torch.device("cpu")) is None  # the class itself defaults to fp32


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
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    compile_problem.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"^compile=True: .*C\+\+ compiler.*compile=False$"):
            scenepriv.load_classifier("efficientnet-lite0", compile=True)
        classifier = make_classifier(compile=True)  # built elsewhere, refused at its first call
        with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):
            classifier(torch.rand(1, 3, 16, 16))
    finally:
        compile_problem.cache_clear()


class ConvolutionNorm(nn.Module):
    def __init__(self, skip: bool):
        super().__init__()
        self.skip = skip
        self.convolution, self.norm = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
        with torch.no_grad():
            self.norm.running_mean.uniform_(-1, 1), self.norm.running_var.uniform_(0.5, 2)
            self.norm.weight.uniform_(0.5, 2), self.norm.bias.uniform_(-1, 1)

    def forward(self, x):
        y = self.convolution(x)
        return self.head(self.norm(y) + y if self.skip else self.norm(y))


def test_folding_batch_norms_keeps_the_logits_and_leaves_the_original_alone():
    torch.manual_seed(0)
    network, x = ConvolutionNorm(skip=False).eval(), torch.randn(2, 3, 8, 8)
    folded = fold_batch_norms(network, x[:1])
    assert isinstance(folded.norm, nn.Identity) and isinstance(network.norm, nn.BatchNorm2d)
    torch.testing.assert_close(folded(x), network(x))


def test_a_norm_whose_convolution_output_is_also_read_elsewhere_is_not_folded():
    torch.manual_seed(0)
    network = ConvolutionNorm(skip=True).eval()
    with pytest.warns(UserWarning, match="changed the logits"):
        assert fold_batch_norms(network, torch.randn(1, 3, 8, 8)) is network


def test_strided_depthwise_convolutions_take_their_gradient_in_fp32_under_bf16_and_no_other_layer_does():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, groups=8),
                            nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 16, 3, stride=2, groups=2)).eval()
    seen = {}
    for index, module in enumerate(network):
        module.register_forward_hook(lambda module, inputs, output, index=index: seen.__setitem__(index, output.dtype))
    patched = depthwise_gradients_in_fp32(network)
    assert patched is not network and "forward" not in vars(network[2])  # the original is left alone
    x = torch.rand(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        patched(x.clone().requires_grad_(True)).float().sum().backward()
        under_gradient = dict(seen)
        with torch.no_grad():
            patched(x)
    assert under_gradient == {0: torch.bfloat16, 1: torch.bfloat16, 2: torch.float32, 3: torch.bfloat16,
                              4: torch.bfloat16}  # the output's precision is the one computed in
    assert seen[2] == torch.bfloat16  # without a gradient, as autocast has it
    torch.testing.assert_close(patched(x), network(x))  # fp32: the same function
    unstrided = nn.Sequential(nn.Conv2d(3, 3, 3, groups=3))
    assert depthwise_gradients_in_fp32(unstrided) is unstrided


def test_keep_freed_memory_applies_exactly_where_glibc_runs():
    """mallopt answers 1 for each setting it takes: a wrong parameter number would make this False."""
    from scenepriv.runtime import PHOTO_HEAP_BLOCKS, keep_freed_memory

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc
    assert keep_freed_memory(PHOTO_HEAP_BLOCKS) is glibc


HEAP_OF_A_FREED_PHOTO = """
import ctypes, sys, torch
from scenepriv.runtime import PHOTO_HEAP_BLOCKS, keep_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] != "default":
    keep_freed_memory(None if sys.argv[1] == "keep" else PHOTO_HEAP_BLOCKS)
x = torch.rand(3, 3000, 4000)  # a 12-megapixel photo in float32: 144 MB
y = x.clone()
mapped_while_used = libc.mallinfo2().hblkhd
del y
info = libc.mallinfo2()
work = torch.rand(3, 1500, 2000)  # its working copy at half size: 36 MB
print(mapped_while_used >> 20, info.hblkhd >> 20, info.arena >> 20, (libc.mallinfo2().hblkhd - info.hblkhd) >> 20)
"""


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"), reason="glibc only")
def test_kept_memory_stays_in_the_heap_instead_of_being_unmapped():
    """By default glibc maps each 144 MB block on its own and unmaps it when freed (its pages are faulted in
    again on the next allocation); with the setting, blocks come from the heap and stay there once freed.
    (glibc's own counters: deterministic, unlike counting page faults, which depends on where a block lands.)"""
    runs = {mode: [int(v) for v in subprocess.run([sys.executable, "-c", HEAP_OF_A_FREED_PHOTO, mode], check=True,
                                                 capture_output=True, text=True).stdout.split()]
            for mode in ("default", "keep", "photo")}
    mapped, mapped_after_free, _, work_mapped = runs["default"]
    assert mapped >= 2 * 137 and mapped_after_free <= mapped - 137, runs  # the freed block went back to the OS
    assert work_mapped >= 34, runs  # a 36 MB block is mapped on its own
    mapped, mapped_after_free, heap, work_mapped = runs["keep"]
    assert mapped < 137 and mapped_after_free < 137 and heap >= 2 * 137, runs  # in the heap, kept after free
    assert work_mapped == 0, runs
    mapped, mapped_after_free, _, work_mapped = runs["photo"]
    assert mapped >= 2 * 137 and mapped_after_free <= mapped - 137, runs  # full-size floats: mapped, given back
    assert work_mapped == 0, runs  # the working copy from the heap


def test_protect_runs_fast_by_default_and_the_measuring_commands_run_the_network_in_fp32():
    from scenepriv.cli import build_parser

    parser = build_parser()
    protect = parser.parse_args(["protect", "photo.jpg", "-o", "out"])
    assert protect.precision == "auto" and protect.fold_batch_norm
    for command in (["classify", "photo.jpg"], ["verify", "out"], ["evaluate", "data", "-o", "results"]):
        arguments = parser.parse_args(command)
        assert arguments.precision == "fp32" and arguments.fold_batch_norm, command
    assert not parser.parse_args(["protect", "photo.jpg", "-o", "out", "--no-fold-batch-norm"]).fold_batch_norm


def test_straight_through_quantise_rounds_forward_and_passes_the_gradient_unchanged():
    x = torch.tensor([0.1234, 0.5, 0.99999, 1.2, -0.3], dtype=torch.float64, requires_grad=True)
    saved = straight_through_quantise(x)
    assert torch.equal(saved, torch.round(x.detach().clamp(0, 1) * 255) / 255)
    (gradient,) = torch.autograd.grad((saved * torch.arange(5.0, dtype=torch.float64)).sum(), x)
    assert torch.equal(gradient, torch.arange(5.0, dtype=torch.float64))
    assert torch.equal(x.detach(), torch.tensor([0.1234, 0.5, 0.99999, 1.2, -0.3], dtype=torch.float64))  # untouched


@pytest.mark.parametrize("policy", ["bilinear", "area", "resize-crop"])
def test_one_pass_over_several_batches_gives_each_batch_its_own_logits(policy):
    """forward_many (the loop's photo and its views in one pass) resizes each batch as forward does, the views
    already at the input size included (resize-crop enlarges and crops them too), and splits the logits back."""
    tiny = make_tiny_classifier()
    classifier = Classifier(tiny.network, name="tiny", labels=tiny.labels, input_size=(32, 32), mean=(0.5,) * 3,
                            std=(0.25,) * 3, resize=policy)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(shape, generator=generator) for shape in [(2, 3, 48, 40), (3, 3, 32, 32), (1, 3, 20, 26)]]
    together = classifier.forward_many(batches)
    assert [len(logits) for logits in together] == [2, 3, 1]
    for logits, images in zip(together, batches, strict=True):
        torch.testing.assert_close(logits, classifier(images), rtol=1e-12, atol=1e-12)
    assert torch.equal(classifier.forward_many(batches[:1])[0], classifier(batches[0]))
