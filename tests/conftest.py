"""Shared fixtures: a tiny float64 classifier for exact engine tests, the embedded model, example photos."""

from pathlib import Path

import pytest
import torch
from torch import nn

import scenepriv
from scenepriv.zoo import Classifier

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "photos"


class ToDouble(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def make_tiny_classifier(num_classes: int = 10, seed: int = 0) -> Classifier:
    """A small random CNN computing in float64, so batch size cannot flip a gradient sign by rounding."""
    torch.manual_seed(seed)
    network = nn.Sequential(
        ToDouble(),
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    ).double()
    with torch.no_grad():
        network[-1].weight.mul_(40)
    labels = [f"class {i}" for i in range(num_classes)]
    return Classifier(network, name="tiny", labels=labels, input_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.fixture(scope="session")
def tiny_classifier() -> Classifier:
    return make_tiny_classifier()


@pytest.fixture(scope="session")
def embedded_classifier() -> Classifier:
    return scenepriv.load_classifier("efficientnet-lite0", device="cpu")


@pytest.fixture
def random_images() -> torch.Tensor:
    """Eight 8-bit 32x32 RGB images in [0, 1]."""
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (8, 3, 32, 32), generator=generator).float() / 255
