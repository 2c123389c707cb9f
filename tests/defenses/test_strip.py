"""STRIP (defenses.strip): the blend and the entropy as the paper's code computes them, the threshold's
false-rejection rate on clean data, and on a small network with a planted patch backdoor, triggered inputs
under the threshold."""

import numpy as np
import pytest

from defenses.strip import entropies, entropy, fit_strip, strip_entropy, superimpose, threshold_at
from tests.defenses.tiny import add_trigger, tiny_badnet_files, tiny_data


def test_a_blend_is_the_saturating_sum_of_the_two_images():
    image = np.full((2, 2, 3), 200.0)
    overlays = np.stack([np.full((2, 2, 3), 30.0), np.full((2, 2, 3), 100.0)])
    blends = superimpose(image, overlays)
    assert blends.shape == (2, 2, 2, 3) and blends[0, 0, 0, 0] == 230.0 and blends[1, 1, 1, 2] == 255.0


def test_entropy_is_in_bits_zero_for_a_certain_answer_and_log2_k_for_a_uniform_one():
    rows = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    np.testing.assert_allclose(entropy(rows), [0.0, 2.0, 1.0])


def test_an_images_strip_entropy_is_the_mean_over_its_blends():
    answers = iter([np.array([[1.0, 0.0], [0.5, 0.5]])])  # two blends: 0 bits and 1 bit

    def predict(blends):
        assert blends.shape == (2, 1, 1, 3)
        return next(answers)

    assert strip_entropy(predict, np.zeros((1, 1, 3)), np.zeros((2, 1, 1, 3))) == pytest.approx(0.5)


def test_the_threshold_is_the_frr_quantile_of_clean_entropies():
    clean = np.random.default_rng(0).normal(3.0, 0.5, 20000)
    threshold = threshold_at(clean, 5.0)
    fresh = np.random.default_rng(1).normal(3.0, 0.5, 20000)  # new clean inputs: about 5 % fall under it
    rate = np.mean(fresh < threshold) * 100
    assert abs(rate - 5.0) < 3 * np.sqrt(5.0 * 95.0 / 20000)  # within three binomial standard errors


@pytest.fixture(scope="module")
def badnet(tmp_path_factory):
    """The tiny BadNet (a colour blob per class; a white patch sends any image to class 0): blending two clean
    images shows two blobs, an ambiguous answer; a triggered image keeps its patch (the sum saturates)."""
    import keras

    files = tiny_badnet_files(tmp_path_factory.mktemp("strip"))
    return keras.models.load_model(files["model"])


@pytest.mark.slow
def test_on_a_backdoored_network_triggered_inputs_fall_under_a_threshold_set_at_the_asked_frr(badnet):
    valid, _ = tiny_data(600, seed=1)
    detector, calibration = fit_strip(badnet, valid, 255.0, frr=5.0, n=40, seed=0)
    assert np.mean(calibration < detector.threshold) * 100 == pytest.approx(5.0, abs=0.4)
    test, _ = tiny_data(400, seed=2)  # clean images STRIP never saw
    clean = entropies(badnet, test, 255.0, detector.overlays)
    triggered = entropies(badnet, add_trigger(test), 255.0, detector.overlays)
    false_rejection = np.mean(detector.poisoned(clean)) * 100
    assert false_rejection < 5.0 + 3 * np.sqrt(5.0 * 95.0 / 400)  # the asked rate, within sampling error
    assert np.mean(detector.poisoned(triggered)) * 100 > 90, (np.median(clean), np.median(triggered))
    # the single-image path (eval.py's) gives the batched path's entropy
    one = strip_entropy(lambda blends: badnet.predict(blends / 255.0, verbose=0), test[0], detector.overlays)
    assert one == pytest.approx(clean[0], rel=1e-4)
