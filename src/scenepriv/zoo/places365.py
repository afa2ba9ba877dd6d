"""Places365-Standard classifiers (placeholder: being written)."""

ARCHITECTURES = {"resnet50": "ResNet-50", "resnet18": "ResNet-18", "alexnet": "AlexNet",
                 "densenet161": "DenseNet-161"}


def labels() -> list[str]:
    raise NotImplementedError


def build(arch, weights):
    raise NotImplementedError


def weights_status(arch):
    raise NotImplementedError
