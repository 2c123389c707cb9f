"""The repairs beyond Fine-Pruning, each on numbers: FT-SAM's climb (ASAM), NAD's attention maps and loss, ANP's
masks and perturbations; and on a tiny BadNet with a planted patch backdoor, each lowers the attack success
rate against the BadNet's own."""

import numpy as np
import pytest

from defenses.methods import METHODS, grid_size, plan_space
from defenses.runner import Inputs, load_inputs, run_job


def test_the_asam_climb_has_radius_rho_in_weight_scaled_units_and_leaves_zero_weights_alone():
    import tensorflow as tf

    from defenses.methods.ftsam import asam_perturbation

    rng = np.random.default_rng(0)
    weights = [tf.constant(rng.normal(size=(3, 4)).astype("float32")), tf.constant([0.0, 2.0, -1.0])]
    grads = [tf.constant(rng.normal(size=(3, 4)).astype("float32")), tf.constant([5.0, 0.5, 1.0])]
    climb = asam_perturbation(weights, grads, rho=2.0)
    ratio = np.concatenate(
        [(e / w).numpy().ravel()[w.numpy().ravel() != 0] for e, w in zip(climb, weights, strict=True)]
    )
    assert np.linalg.norm(ratio) == pytest.approx(2.0, rel=1e-5)  # ||e / w|| = rho
    assert climb[1].numpy()[0] == 0.0  # a pruned (zero) weight does not move, whatever its gradient
    # the direction is the gradient's, scaled by w^2: e = rho w^2 g / ||w g||
    expected = (
        2.0
        * np.square(weights[0].numpy())
        * grads[0].numpy()
        / np.sqrt(sum(float(np.sum(np.square(w.numpy() * g.numpy()))) for w, g in zip(weights, grads, strict=True)))
    )
    np.testing.assert_allclose(climb[0].numpy(), expected, rtol=1e-5)


def test_nads_attention_map_is_the_normalised_sum_of_squares_over_channels():
    import tensorflow as tf

    from defenses.methods.nad import attention

    features = np.random.default_rng(1).normal(size=(2, 3, 4, 5)).astype("float32")  # images, h, w, channels
    maps = attention(tf.constant(features)).numpy()
    expected = np.sum(features**2, axis=-1).reshape(2, -1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(maps, expected, rtol=1e-5)
    assert np.allclose(np.linalg.norm(maps, axis=1), 1.0)
    # scaling a layer's output does not change its map: the loss compares where, not how much
    np.testing.assert_allclose(attention(tf.constant(3 * features)).numpy(), maps, rtol=1e-5)


def test_nad_uses_the_last_three_conv_layers_with_half_weight_at_the_lowest():
    from defenses.methods.nad import attention_layers

    assert attention_layers(None, ["c1", "c2", "c3", "c4"]) == (["c2", "c3", "c4"], [0.5, 1.0, 1.0])
    assert attention_layers(None, ["c1", "c2"]) == (["c1", "c2"], [1.0, 1.0])


def test_plans_share_training_between_epoch_values_and_anp_learns_its_masks_once():
    ftsam = plan_space({"defense": "ft-sam", "learning_rates": [0.001, 0.01], "epochs": [5, 10]})
    assert [job.config["epochs"] for job in ftsam.jobs] == [10, 10] and len(ftsam.points) == 4
    assert ftsam.jobs[0].config["threshold"] == 0.0  # FT-SAM's own default: no pruning
    nad = plan_space({"defense": "nad", "epochs": [2, 4]})
    assert len(nad.jobs) == 1 and nad.points[(0.001, 2)] == (0, 2)
    anp = plan_space({"defense": "anp", "mask_thresholds": [0.1, 0.3]})
    assert len(anp.jobs) == 1 and anp.points == {(0.1,): (0, 0), (0.3,): (0, 1)}
    assert grid_size({"defense": "anp", "mask_thresholds": [0.1, 0.2, 0.3]}) == 3
    assert {"fine-prune", "fine-tune", "prune-only", "incremental", "ft-sam", "nad", "anp"} <= set(METHODS)


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """The synthetic `tiny` preset's sunglasses BadNet and its patch ('anonymous') BadNet: DeepID networks with
    the face-size triggers of CSAW-HackML-2020, trained in about 45 s."""
    from defenses.synthetic import BADNETS, build_benchmark

    out = tmp_path_factory.mktemp("preset")
    build_benchmark("tiny", out, badnets=(BADNETS[0], BADNETS[2]), with_clean=False)

    def loaded(name: str, trigger: str):
        inputs = Inputs(
            model=out / name / f"{name}_bd_net.h5",
            arch=None,
            divisor=255.0,
            valid=out / "data" / "clean_validation_data.h5",
            test=out / "data" / "clean_test_data.h5",
            poisoned={trigger: out / name / f"{trigger}_poisoned_data.h5"},
        )
        return load_inputs(inputs)

    return {"sunglasses": loaded("sunglasses", "sunglasses"), "patch": loaded("anonymous", "patch")}


def points_of(kind: str, config: dict, loaded) -> dict[int, dict]:
    points = {}
    run_job(kind, config, loaded, lambda position, metrics: points.__setitem__(position, metrics))
    return points


def asr(point: dict) -> float:
    return next(iter(point["asr"].values()))


@pytest.mark.slow
def test_ft_sam_removes_what_plain_fine_tuning_leaves(preset):
    """Sunglasses, LR 0.001, 10 epochs on the clean validation set: plain fine-tuning leaves about 89 % ASR;
    the sharpness-aware climb takes it to about 0 at CA about 94 %."""
    loaded = preset["sunglasses"]
    plain = points_of("finetune", {"threshold": 0.0, "lr": 0.001, "epochs": 10, "layers": [], "seed": 0}, loaded)
    sam = points_of(
        "ft-sam", {"threshold": 0.0, "lr": 0.001, "epochs": 10, "rho": 2.0, "layers": [], "seed": 0}, loaded
    )
    before = sam[0]["before"]["asr"]["sunglasses"]
    assert before > 95 and asr(sam[10]) < 20 and asr(sam[10]) < asr(plain[10]) - 30, (asr(plain[10]), asr(sam[10]))
    assert sam[10]["valid_acc"] > 85


@pytest.mark.slow
def test_nad_lowers_the_attack_success_rate(preset):
    """At LR 0.002 (10 epochs, a 5-epoch teacher) ASR falls from 99.7 % to about 1 % at CA 100 % for seeds 0-2.
    (At LR 0.001 the outcome swings with the seed, 12-79 %; plain fine-tuning at 0.002 does as well as NAD:
    on this preset the learning rate decides, which the leaderboard shows.)"""
    loaded = preset["sunglasses"]
    points = points_of("nad", {"lr": 0.002, "epochs": 10, "teacher_epochs": 5, "beta": 1000.0, "seed": 0}, loaded)
    before = points[0]["before"]["asr"]["sunglasses"]
    assert before > 95 and asr(points[10]) < 20 and points[10]["valid_acc"] > 90, asr(points[10])
    goodnet = points[10]["goodnet"]  # the GoodNet answers N where the student and the BadNet disagree
    assert goodnet["detection"]["sunglasses"] > 75 and goodnet["false_alarm"] < 5


@pytest.mark.slow
def test_anp_masks_stay_in_0_1_the_perturbation_drives_some_down_and_pruning_them_lowers_asr(preset):
    import keras

    from defenses.methods.anp import learn_masks

    loaded = preset["patch"]
    conv = list(loaded.report.conv_layers)
    keras.utils.set_random_seed(0)
    calm = np.concatenate(list(learn_masks(loaded.bad, loaded.valid, 255.0, conv, 0.0, 1.0, 50).values()))
    stirred = np.concatenate(list(learn_masks(loaded.bad, loaded.valid, 255.0, conv, 0.2, 0.2, 50).values()))
    # the network's own loss leaves every mask above one half (0.76 at the lowest on CI, 0.9 here); the
    # perturbation drives some under it
    assert calm.min() > 0.5 and (stirred < 0.5).sum() > 0, (calm.min(), (stirred < 0.5).sum())
    assert stirred.min() >= 0.0 and stirred.max() <= 1.0
    config = {"mask_thresholds": [0.05, 0.2, 0.5], "anp_eps": 0.1, "anp_alpha": 0.2, "anp_iterations": 300, "seed": 0}
    points = points_of("anp", config, loaded)
    pruned = [sum(p["pruned"].values()) for _, p in sorted(points.items())]
    assert pruned == sorted(pruned) and pruned[0] > 0  # a higher tau prunes more (a superset)
    before = points[0]["before"]["asr"]["patch"]
    kept = [p for p in points.values() if p["valid_acc"] > 95]
    assert kept and min(asr(p) for p in kept) < before - 5, {p["mask_threshold"]: asr(p) for p in points.values()}


@pytest.mark.slow
def test_neural_cleanse_flags_the_patch_target_and_unlearning_its_trigger_lowers_the_asr(preset):
    """The patch BadNet (target 4): the scan flags 4 alone (log-L1 index about 4.7) with a mask of about 5
    pixels; 5 epochs of unlearning at LR 0.001 take the ASR from 99-100 % to about 11 % at CA 100 %, where
    plain fine-tuning at the same LR leaves about 69 %."""
    loaded = preset["patch"]
    points = points_of("nc-unlearn", {"lr": 0.001, "epochs": 5, "scan_steps": 200, "seed": 0}, loaded)
    assert points[0]["flagged"] == [4] and points[0]["mask_l1"]["4"] < 20, points[0]["anomaly"]
    before = points[0]["before"]["asr"]["patch"]
    assert before > 95 and asr(points[5]) < 30 and points[5]["valid_acc"] > 95, asr(points[5])
