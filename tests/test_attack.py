"""The batched engine and the paper's methods: equations, bounds, batching, stopping, cost."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import scenepriv
from scenepriv import targets
from scenepriv.attack import Views, _passes, quantise
from scenepriv.zoo import Classifier

METHOD_NAMES = list(scenepriv.METHODS)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_eps_zero_returns_the_input(tiny_classifier, random_images, method):
    result = scenepriv.protect(random_images, tiny_classifier, method, seed=0, eps=0.0)
    assert torch.equal(result.images, random_images)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_outputs_are_8bit_images_in_range_within_the_step_bound(tiny_classifier, random_images, method):
    eps = 0.01
    result = scenepriv.protect(random_images, tiny_classifier, method, seed=0, eps=eps, iterations=3
                               if method in ("sog", "fgsm") else None)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert torch.equal(quantise(result.images), result.images)
    for image, original, record in zip(result.images, random_images, result.records, strict=True):
        # each step moves a pixel by at most eps; saving rounds to the nearest 8-bit level
        assert (image - original).abs().max() <= record["iterations"] * eps + 0.5 / 255 + 1e-6
        assert record["linf"] == pytest.approx(float((image - original).abs().max()), abs=1e-6)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_inputs_are_not_mutated(tiny_classifier, random_images, method):
    before = random_images.clone()
    scenepriv.protect(random_images, tiny_classifier, method, seed=0)
    assert torch.equal(random_images, before)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_batched_equals_one_by_one_with_the_same_seed(tiny_classifier, random_images, method):
    batched = scenepriv.protect(random_images, tiny_classifier, method, seed=7, max_iter=20)
    for i in range(len(random_images)):
        alone = scenepriv.protect(random_images[i : i + 1], tiny_classifier, method, seed=7, max_iter=20)
        assert torch.equal(alone.images[0], batched.images[i])
        assert alone.records[0]["iterations"] == batched.records[i]["iterations"]
        assert alone.records[0]["goal"] == batched.records[i]["goal"]


def test_images_of_one_batch_stop_at_different_iterations_at_their_first_success(tiny_classifier, random_images):
    result = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=3)
    iterations = [r["iterations"] for r in result.records]
    assert len(set(iterations)) > 1
    for i, record in enumerate(result.records):
        if record["success"]:
            assert record["final_top5"][0]["index"] == record["goal"]["classes"][0]["index"]
            assert record["final_top5"][0]["probability"] >= 0.99
            # one step fewer and the same image does not reach the goal: it stopped at the first success
            shorter = scenepriv.protect(random_images[i : i + 1], tiny_classifier, "p-fgsm", seed=3,
                                        max_iter=record["iterations"] - 1)
            assert not shorter.records[0]["success"]


def _gradient_sign(classifier, x, label):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(classifier(x), torch.tensor([label]))
    return torch.autograd.grad(loss, x)[0].sign()


def test_one_pfgsm_step_descends_the_loss_of_its_target(tiny_classifier, random_images):
    x = random_images[:1]
    result = scenepriv.protect(x, tiny_classifier, "p-fgsm", seed=0, max_iter=1)
    target = result.records[0]["goal"]["classes"][0]["index"]
    expected = quantise((x - 0.007 * _gradient_sign(tiny_classifier, x, target)).clamp(0, 1))
    assert torch.equal(result.images, expected)


def test_fgsm_repeats_its_first_ascent_step_k_times(tiny_classifier, random_images):
    x = random_images[:1]
    label = int(tiny_classifier(x).argmax())
    sign = _gradient_sign(tiny_classifier, x, label)
    expected = x
    for _ in range(4):
        expected = (expected + 0.007 * sign).clamp(0, 1)
    result = scenepriv.protect(x, tiny_classifier, "fgsm", seed=0, iterations=4)
    assert torch.equal(result.images, quantise(expected))
    assert result.records[0]["iterations"] == 4 and result.records[0]["goal"]["classes"][0]["index"] == label


def test_nfgsm_uses_the_given_true_label(tiny_classifier, random_images):
    labels = torch.full((len(random_images),), 3)
    result = scenepriv.protect(random_images, tiny_classifier, "n-fgsm", labels=labels, seed=0)
    for record in result.records:
        assert record["goal"]["classes"][0]["index"] == 3
        assert record["success"] == (record["final_top5"][0]["index"] != 3)


def test_sog_adds_the_same_sign_pattern_each_time(tiny_classifier, random_images):
    x = torch.full((1, 3, 32, 32), 128 / 255)
    result = scenepriv.protect(x, tiny_classifier, "sog", seed=0, iterations=3, eps=2 / 255)
    delta = torch.round((result.images - x) * 255)
    assert set(delta.unique().tolist()) == {-6.0, 6.0}


def test_rfgsm_never_targets_the_clean_top1_and_lfgsm_targets_the_least_likely(tiny_classifier, random_images):
    with torch.no_grad():
        probabilities = tiny_classifier(random_images).softmax(1)
    for seed in range(10):
        goals = scenepriv.protect(random_images, tiny_classifier, "r-fgsm", seed=seed, max_iter=0).goals
        assert all(int(g) != int(p.argmax()) for g, p in zip(goals, probabilities, strict=True))
    result = scenepriv.protect(random_images, tiny_classifier, "l-fgsm", seed=0, max_iter=0)
    assert result.toward and result.goals.tolist() == probabilities.argmin(1).tolist()
    assert [r["goal"]["classes"][0]["index"] for r in result.records] == probabilities.argmin(1).tolist()


def test_targets_without_a_seed_are_unpredictable_and_with_a_seed_reproducible(tiny_classifier, random_images):
    x = random_images[:1]
    unseeded = {int(scenepriv.protect(x, tiny_classifier, "r-fgsm", max_iter=0).goals[0])
                for _ in range(12)}
    assert len(unseeded) > 1
    seeded = {int(scenepriv.protect(x, tiny_classifier, "r-fgsm", seed=5, max_iter=0).goals[0])
              for _ in range(5)}
    assert len(seeded) == 1


def test_max_perturbation_bounds_the_change(tiny_classifier, random_images):
    result = scenepriv.protect(random_images, tiny_classifier, "r-fgsm", seed=0, max_perturbation=3 / 255)
    assert (result.images - random_images).abs().max() <= 3 / 255 + 1e-6


class CountingNetwork(nn.Module):
    """Counts the images each forward pass sees, and how many of those passes build a graph."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.rows = self.rows_with_gradient = 0

    def forward(self, x):
        self.rows += len(x)
        self.rows_with_gradient += len(x) if torch.is_grad_enabled() else 0
        return self.network(x)


@pytest.mark.parametrize("method", ["n-fgsm", "r-fgsm", "p-fgsm"])
def test_one_forward_per_active_image_per_iteration(tiny_classifier, random_images, method):
    counter = CountingNetwork(tiny_classifier.network)
    counted = Classifier(counter, name="tiny", labels=tiny_classifier.labels, input_size=(32, 32),
                         mean=(0.5,) * 3, std=(0.25,) * 3)
    records = scenepriv.protect(random_images, counted, method, seed=1, max_iter=20).records
    # the clean classification is the first iteration's forward; each image has one more to judge its last step
    assert counter.rows == sum(r["iterations"] + 1 for r in records)
    assert counter.rows_with_gradient <= counter.rows


def test_fixed_step_methods_classify_twice_whatever_k(tiny_classifier, random_images):
    counter = CountingNetwork(tiny_classifier.network)
    counted = Classifier(counter, name="tiny", labels=tiny_classifier.labels, input_size=(32, 32),
                         mean=(0.5,) * 3, std=(0.25,) * 3)
    scenepriv.protect(random_images, counted, "fgsm", seed=1, iterations=6)
    assert counter.rows == 2 * len(random_images)


def test_unknown_method_and_bad_settings_are_rejected(tiny_classifier, random_images):
    with pytest.raises(ValueError, match="unknown method"):
        scenepriv.protect(random_images, tiny_classifier, "pgd")
    with pytest.raises(ValueError, match="sigma"):
        scenepriv.protect(random_images, tiny_classifier, "p-fgsm", sigma=1.5)


def test_pfgsm_targets_come_from_the_private_set_only(tiny_classifier, random_images):
    """With sigma 0.9 the set excludes several likely classes; every drawn target must lie beyond sigma."""
    with torch.no_grad():
        probabilities = tiny_classifier(random_images).double().softmax(1)
    allowed = targets.private_target_set(probabilities, 0.9)
    assert (allowed.sum(1) < probabilities.shape[1] - 1).all()  # a strict subset of R-FGSM's set
    for seed in range(5):
        records = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=seed, sigma=0.9, max_iter=0).records
        for i, record in enumerate(records):
            target = record["goal"]["classes"][0]
            assert allowed[i, target["index"]] and target["mass_above"] > 0.9


# --- ensembles ----------------------------------------------------------------------------------------------------


def test_a_single_model_in_a_list_is_the_single_model_run(tiny_classifier, random_images):
    alone = scenepriv.protect(random_images, tiny_classifier, "p-fgsm", seed=3, sigma=0.5)
    listed = scenepriv.protect(random_images, [tiny_classifier], "p-fgsm", seed=3, sigma=0.5)
    assert torch.equal(alone.images, listed.images) and alone.records == listed.records


@pytest.mark.parametrize("transfer", [{}, {"momentum": 1.0, "diversity": 2, "smoothing": 1.0}],
                         ids=["plain", "transfer-options"])
def test_ensemble_targets_obey_eq10_for_every_model_and_success_needs_every_model(random_images, transfer):
    from conftest import make_tiny_classifier
    from scenepriv import targets

    models = [make_tiny_classifier(seed=0), make_tiny_classifier(seed=1)]
    result = scenepriv.protect(random_images, models, "p-fgsm", seed=0, sigma=0.5, threshold=0.6, max_iter=30,
                               **transfer)

    with torch.no_grad():
        clean = [model(random_images).double().softmax(1) for model in models]
        final = [model(result.images).double().softmax(1) for model in models]
    for i, record in enumerate(result.records):
        target = record["goal"]["classes"][0]["index"]
        if not record["goal"]["fallback_least_likely"]:
            for probabilities in clean:  # Eq. 10 holds for each model, not only for the first
                assert targets.mass_ranked_above(probabilities)[i, target] > 0.5
        fooled = [int(p[i].argmax()) == target and float(p[i, target]) >= 0.6 for p in final]
        assert record["success"] == all(fooled), (i, fooled)
        assert [m["final_top1"] for m in record["models"]] == [models[0].labels[int(p[i].argmax())] for p in final]
    assert any(r["success"] for r in result.records)


def test_an_ensemble_member_that_cannot_be_fooled_means_no_success(tiny_classifier, random_images):
    class Blind(torch.nn.Module):  # the same answer whatever the image
        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.linspace(0, 1, 10, dtype=torch.float64), requires_grad=False)

        def forward(self, x):
            return self.logits.expand(len(x), -1) + 0 * x.double().mean((1, 2, 3), keepdim=False)[:, None]

    blind = Classifier(Blind(), name="blind", labels=tiny_classifier.labels, input_size=(32, 32),
                       mean=(0.5,) * 3, std=(0.25,) * 3)
    result = scenepriv.protect(random_images, [tiny_classifier, blind], "p-fgsm", seed=0, sigma=0.5, max_iter=5)
    assert not any(r["success"] for r in result.records)
    assert all(r["iterations"] == 5 for r in result.records)


def test_an_ensemble_of_models_with_other_classes_is_refused(tiny_classifier):
    from conftest import make_tiny_classifier

    other = make_tiny_classifier(num_classes=12)
    with pytest.raises(ValueError, match="same classes"):
        scenepriv.protect(torch.rand(1, 3, 32, 32), [tiny_classifier, other], "p-fgsm")


# --- away from the likely classes (not in the paper) --------------------------------------------------------------


def test_away_moves_the_top1_out_of_the_likely_classes(tiny_classifier, random_images):
    result = scenepriv.protect(random_images, tiny_classifier, "away", seed=0, sigma=0.5, threshold=0.6, max_iter=40)

    with torch.no_grad():
        clean = tiny_classifier(random_images).double().softmax(1)
        final = tiny_classifier(result.images).double().softmax(1)
    likely = ~targets.private_target_set(clean, 0.5)  # the classes within the top half of the probability
    assert any(r["success"] for r in result.records)
    for i, record in enumerate(result.records):
        assert sorted(a["index"] for a in record["goal"]["classes"]) == likely[i].nonzero().squeeze(1).tolist()
        outside = float(final[i][~likely[i]].sum())
        assert record["success"] == (not bool(likely[i, int(final[i].argmax())]) and outside >= 0.6), i


def test_away_from_an_ensemble_avoids_what_any_model_finds_likely(random_images):
    from conftest import make_tiny_classifier

    models = [make_tiny_classifier(seed=0), make_tiny_classifier(seed=1)]
    result = scenepriv.protect(random_images, models, "away", seed=0, sigma=0.5, max_iter=1)
    with torch.no_grad():
        clean = torch.stack([m(random_images).double().softmax(1) for m in models])
    union = (~targets.private_target_set(clean[0], 0.5)) | (~targets.private_target_set(clean[1], 0.5))
    for i, record in enumerate(result.records):
        assert sorted(a["index"] for a in record["goal"]["classes"]) == union[i].nonzero().squeeze(1).tolist()


# --- batch shapes -------------------------------------------------------------------------------------------------


def test_bucketed_batches_give_the_same_result_bit_for_bit_and_few_shapes(tiny_classifier):
    """In float64 (the tiny classifier), padding the batch with finished images changes nothing but its shapes."""
    from scenepriv.attack import Goal, sign_step_loop

    images = torch.rand(13, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    labels = lambda probabilities: probabilities[0].topk(3).indices[:, 2]  # noqa: E731  a reachable target
    shapes = []
    counted = Classifier(tiny_classifier.network, name="tiny", labels=tiny_classifier.labels, input_size=(32, 32),
                         mean=(0.5,) * 3, std=(0.25,) * 3)
    counted.network.register_forward_pre_hook(lambda module, inputs: shapes.append(len(inputs[0])))  # what it plans
    runs = {}
    for bucket in (False, True):
        shapes.clear()
        runs[bucket] = sign_step_loop(images, counted, Goal(labels, True, threshold=0.9), eps=0.01, max_iter=30,
                                      bucket=bucket)
        runs[bucket, "shapes"] = set(shapes)
    plain, bucketed = runs[False], runs[True]
    assert torch.equal(plain.images, bucketed.images) and torch.equal(plain.iterations, bucketed.iterations)
    assert torch.equal(plain.success, bucketed.success) and torch.equal(plain.final_logits, bucketed.final_logits)
    assert len(set(plain.iterations.tolist())) >= 3  # images did leave the batch at different times
    assert runs[True, "shapes"] <= {1, 2, 4, 8, 13} and len(runs[False, "shapes"]) > len(runs[True, "shapes"])


def test_one_pass_over_the_views_gives_each_model_and_view_its_own_logits(random_images):
    """The loop passes the photos and their views through each model at once (Classifier.forward_many); the outputs
    come back in the order of one call per view: the models on the photos, then view by view, model by model, the
    judged views first. The same two models with no forward_many give the same outputs (float64: to its rounding,
    which on some CPUs differs in the last bits from one batch size to another)."""

    class OneCallEach(nn.Module):
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, images):
            return self.classifier(images)

    from conftest import make_tiny_classifier

    models = [make_tiny_classifier(seed=0), make_tiny_classifier(seed=1)]
    views = Views(judged=lambda saved, rows: [saved.flip(-1), saved[..., 4:, :]],
                  diversity=lambda saved: [saved[..., 2:, 2:]])
    index, active = torch.arange(3), torch.ones(8, dtype=torch.bool)
    x = random_images.clone()
    _, _, outputs, judged = _passes(x, index, active, models, views, wants_gradient=True, bucket=False)
    _, _, one_by_one, judged_one_by_one = _passes(x, index, active, [OneCallEach(m) for m in models], views,
                                                  wants_gradient=True, bucket=False)
    assert len(outputs) == 2 + 2 * 3 and len(judged) == 2 * 2
    for together, alone in zip(outputs + judged, one_by_one + judged_one_by_one, strict=True):
        torch.testing.assert_close(together.detach(), alone.detach(), rtol=1e-12, atol=1e-12)
    first_view_second_model = models[1](x[:3].flip(-1)).detach()
    torch.testing.assert_close(judged[1].detach(), first_view_second_model, rtol=1e-12, atol=1e-12)
