"""Threshold rule, masks, cached-activation evaluation and the incremental stop rule on tiny models."""

import numpy as np
import pytest

from defenses.finetune import FineTuneSettings, fine_tune, seed_everything
from defenses.metrics import percent_equal, predict_labels
from defenses.pruning import (
    MaskedPredictor,
    activation_profile,
    apply_masks,
    incremental_prune,
    threshold_curve,
    threshold_masks,
)
from tests.defenses.tiny import tiny_data, tiny_model, trained_tiny_model


@pytest.fixture(scope="module")
def trained():
    return trained_tiny_model()


def test_threshold_rule_matches_a_hand_computation():
    profile = {"conv": np.array([0.0, 1.0, 2.0, 5.0])}  # mean 2.0
    assert threshold_masks(profile, 1.0)["conv"].tolist() == [False, False, True, True]
    assert threshold_masks(profile, 0.5)["conv"].tolist() == [False, True, True, True]  # prune a_c < 1.0
    assert threshold_masks(profile, 2.0)["conv"].tolist() == [False, False, False, True]  # prune a_c < 4.0


def test_threshold_zero_prunes_nothing_even_with_negative_means():
    profile = {"conv": np.array([-3.0, -1.0, 0.0, 2.0])}
    assert threshold_masks(profile, 0.0)["conv"].all()


def test_activation_profile_is_the_mean_over_images_and_positions(trained):
    import keras

    pixels, _ = tiny_data(50, seed=3)
    profile = activation_profile(trained, pixels, 255.0)
    probe = keras.Model(trained.inputs, trained.get_layer("conv_b").output)
    expected = np.asarray(probe(pixels / 255.0)).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(profile["conv_b"], expected, rtol=1e-5)
    assert set(profile) == {"conv_a", "conv_b"}


def test_masked_predictor_equals_the_pruned_network(trained):
    import keras

    pixels, labels = tiny_data(120, seed=4)
    profile = activation_profile(trained, pixels, 255.0)
    masks = threshold_masks(profile, 1.0)
    pruned = keras.models.clone_model(trained)
    pruned.set_weights(trained.get_weights())
    apply_masks(pruned, masks)
    expected = predict_labels(pruned, pixels, 255.0)
    for first in ("conv_a", "conv_b"):
        chosen = {name: keep for name, keep in masks.items() if name >= first}
        reference = keras.models.clone_model(trained)
        reference.set_weights(trained.get_weights())
        apply_masks(reference, chosen)
        predictor = MaskedPredictor(trained, 255.0, first_layer=first)
        np.testing.assert_array_equal(predictor.labels(chosen, pixels), predict_labels(reference, pixels, 255.0))
    assert MaskedPredictor(trained, 255.0, "conv_a").labels(masks, pixels).tolist() == expected.tolist()


def test_threshold_curve_reports_more_pruning_as_t_grows(trained):
    pixels, labels = tiny_data(150, seed=5)
    profile = activation_profile(trained, pixels, 255.0)
    points = threshold_curve(trained, 255.0, profile, [0.0, 0.5, 1.0, 1.5], (pixels, labels), (pixels, labels))
    fractions = [point.fraction for point in points]
    assert fractions[0] == 0.0 and fractions == sorted(fractions) and fractions[-1] > 0.3
    assert points[0].ca == pytest.approx(percent_equal(predict_labels(trained, pixels, 255.0), labels))


def test_pruned_channels_stay_zero_through_fine_tuning():
    # Linear conv layers: gradients reach a zeroed channel, so only the mask constraint keeps it at zero.
    seed_everything(1)
    model = tiny_model(conv_activation="linear", seed=1)
    pixels, labels = tiny_data(200, seed=1)
    masks = threshold_masks(activation_profile(model, pixels, 255.0), 1.0)
    masks = {name: keep if (~keep).any() else np.r_[False, keep[1:]] for name, keep in masks.items()}
    apply_masks(model, masks)
    before = [np.asarray(model.get_layer(name).kernel).copy() for name in masks]
    fine_tune(model, (pixels, labels), 255.0, FineTuneSettings(learning_rate=0.01, epochs=2))
    for (name, keep), old in zip(masks.items(), before, strict=True):
        layer = model.get_layer(name)
        kernel, bias = np.asarray(layer.kernel), np.asarray(layer.bias)
        assert np.all(kernel[..., ~keep] == 0) and np.all(bias[~keep] == 0)
        assert not np.allclose(kernel[..., keep], old[..., keep])  # the kept channels did train


def test_incremental_pruning_stops_at_the_first_step_past_the_drop(trained):
    import keras

    pixels, labels = tiny_data(200, seed=6)
    profile = activation_profile(trained, pixels, 255.0)
    result = incremental_prune(trained, 255.0, profile, (pixels, labels), max_drop=5.0, layer="conv_b")
    # Recompute every step with the full network to find the first step past the drop independently.
    accuracies = []
    for count in range(len(result.order) + 1):
        keep = np.ones(8, bool)
        keep[result.order[:count]] = False
        model = keras.models.clone_model(trained)
        model.set_weights(trained.get_weights())
        apply_masks(model, {"conv_b": keep})
        accuracies.append(percent_equal(predict_labels(model, pixels, 255.0), labels))
    assert [step.valid_acc for step in result.steps] == pytest.approx(accuracies)
    expected_stop = next(k for k, acc in enumerate(accuracies) if accuracies[0] - acc > 5.0)
    assert result.stop == expected_stop
    assert int((~result.masks["conv_b"]).sum()) == expected_stop
    assert result.order == np.argsort(profile["conv_b"], kind="stable").tolist()


def test_incremental_stop_never_reads_the_test_sets(trained):
    """Honest selection: swapping the test sets for garbage changes the reported numbers, not the stop."""
    valid = tiny_data(200, seed=7)
    test = tiny_data(200, seed=8)
    garbage = (np.zeros_like(test[0]), (test[1] + 1) % 4)
    profile = activation_profile(trained, valid[0], 255.0)
    honest = incremental_prune(trained, 255.0, profile, valid, 3.0, "conv_b", test, {"trigger": test})
    swapped = incremental_prune(trained, 255.0, profile, valid, 3.0, "conv_b", garbage, {"trigger": garbage})
    without = incremental_prune(trained, 255.0, profile, valid, 3.0, "conv_b", full_curve=False)
    assert honest.stop == swapped.stop == without.stop
    assert np.array_equal(honest.masks["conv_b"], swapped.masks["conv_b"])
    assert [s.ca for s in honest.steps] != [s.ca for s in swapped.steps]


def test_cut_of_a_branching_network_takes_the_other_branch_along():
    from defenses.models import build_deepid_csaw
    from defenses.pruning import downstream_side_inputs

    model = build_deepid_csaw(n_classes=10)
    assert downstream_side_inputs(model, "conv_4") == ["fc_1"]  # fc_1 reads pool_3, not conv_4
    assert downstream_side_inputs(model, "conv_3") == []
    pixels = np.random.default_rng(0).uniform(0, 255, (64, 55, 47, 3)).astype(np.float32)
    profile = activation_profile(model, pixels, 255.0)
    masks = threshold_masks(profile, 1.0, ["conv_4"])
    reference = build_deepid_csaw(n_classes=10)
    reference.set_weights(model.get_weights())
    apply_masks(reference, masks)
    predictor = MaskedPredictor(model, 255.0, first_layer="conv_4")
    np.testing.assert_array_equal(predictor.labels(masks, pixels), predict_labels(reference, pixels, 255.0))
