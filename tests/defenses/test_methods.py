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
    from tests.defenses.tiny import tiny_preset

    out = tiny_preset(tmp_path_factory.mktemp("preset"))

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
    # 150 steps (300 before): the kept points' lowest ASR was 87 % here, under the 95 % this asks
    config = {"mask_thresholds": [0.05, 0.2, 0.5], "anp_eps": 0.1, "anp_alpha": 0.2, "anp_iterations": 150, "seed": 0}
    points = points_of("anp", config, loaded)
    pruned = [sum(p["pruned"].values()) for _, p in sorted(points.items())]
    assert pruned == sorted(pruned) and pruned[0] > 0  # a higher tau prunes more (a superset)
    before = points[0]["before"]["asr"]["patch"]
    kept = [p for p in points.values() if p["valid_acc"] > 95]
    assert kept and min(asr(p) for p in kept) < before - 5, {p["mask_threshold"]: asr(p) for p in points.values()}


@pytest.mark.slow
def test_neural_cleanse_flags_the_patch_target_and_unlearning_its_trigger_lowers_the_asr(preset):
    """The patch BadNet (target 4): a scan of 100 steps a label flags 4 alone (log-L1 index 5.2) with a mask of
    about 8 pixels; 5 epochs of unlearning at LR 0.001 take the ASR from 100 % to about 5 % at held-out CA
    99.7 %, where plain fine-tuning at the same LR leaves about 69 %. (200 steps gave index 4.7 and 5 pixels;
    100 halve the test's time.)"""
    loaded = preset["patch"]
    points = points_of("nc-unlearn", {"lr": 0.001, "epochs": 5, "scan_steps": 100, "seed": 0}, loaded)
    assert points[0]["flagged"] == [4] and points[0]["mask_l1"]["4"] < 20, points[0]["anomaly"]
    before = points[0]["before"]["asr"]["patch"]
    assert before > 95 and asr(points[5]) < 30 and points[5]["valid_acc"] > 95, asr(points[5])


def test_fst_draws_a_new_head_at_the_old_norm_and_its_penalty_is_the_inner_product_per_10_classes():
    import tensorflow as tf

    from defenses.methods.fst import head_layer, reinitialise_head, shift_penalty
    from tests.defenses.tiny import tiny_model

    model = tiny_model(n_classes=4)
    before = np.asarray(head_layer(model).kernel).copy()
    original = reinitialise_head(model, seed=0)
    after = np.asarray(head_layer(model).kernel)
    np.testing.assert_array_equal(original, before)
    assert np.linalg.norm(after) == pytest.approx(np.linalg.norm(before), rel=1e-5)
    assert abs(np.corrcoef(after.ravel(), before.ravel())[0, 1]) < 0.5  # a new draw, not the old head
    constrained = head_layer(model).kernel.constraint(tf.constant(3 * after))
    assert float(tf.norm(constrained)) == pytest.approx(np.linalg.norm(before), rel=1e-5)  # kept after a step
    penalty = float(shift_penalty(tf.constant(after), tf.constant(original), alpha=0.2, classes=4))
    assert penalty == pytest.approx(0.2 * 10 / 4 * float(np.sum(after * original)), rel=1e-5)


def test_sau_projects_into_its_budget_and_unlearns_only_potential_poisons():
    import tensorflow as tf

    from defenses.methods.sau import js_divergence, project, shared_unlearning_loss

    delta = tf.constant(np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32"))
    assert float(tf.reduce_max(tf.abs(project(delta, 0.2, 0)))) == pytest.approx(0.2)
    lengths = tf.norm(tf.reshape(project(delta, 0.5, 1), (2, -1)), axis=1).numpy()
    np.testing.assert_allclose(lengths, [0.5, 0.5], rtol=1e-5)
    small = delta * 1e-3  # inside the L2 ball: unchanged
    np.testing.assert_allclose(project(small, 0.5, 1).numpy(), small.numpy(), rtol=1e-6)
    p = tf.constant([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    assert js_divergence(p, p).numpy() == pytest.approx([0.0, 0.0], abs=1e-6)
    # row 0: the BadNet sends the perturbed image to 2, neither its label (0) nor its clean answer (0): a
    # potential poison, -log(1 - p_2) of the repaired network counts; row 1: the BadNet answers the label
    bad_perturbed = tf.constant([[0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])
    bad_clean = tf.constant([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    loss = shared_unlearning_loss(p, bad_perturbed, bad_clean, tf.constant([0, 1]))
    assert float(loss) == pytest.approx(-np.log(1 + 1e-6 - 0.1) / 2, rel=1e-4)


def test_ibau_keeps_its_universal_perturbation_in_the_l2_ball():
    import keras
    import tensorflow as tf

    from defenses.methods.ibau import UnlearningStep, project_l2
    from tests.defenses.tiny import tiny_data, trained_tiny_model

    big = tf.ones((1, 4, 4, 3)) * 10
    assert float(tf.norm(project_l2(big, 3.0))) == pytest.approx(3.0, rel=1e-5)
    model = trained_tiny_model(epochs=2)
    step = UnlearningStep(model, keras.optimizers.Adam(1e-3), k=2, radius=1.5, divisor=255.0, image_shape=(12, 10, 3))
    pixels, labels = tiny_data(64)
    batches = [(tf.constant(pixels[i : i + 32] / 255.0, tf.float32), tf.constant(labels[i : i + 32])) for i in (0, 32)]
    step.start_epoch(batches)
    assert 0 < float(tf.norm(step.delta)) <= 1.5 + 1e-5  # it moved, within the ball
    weights = [w.numpy().copy() for w in model.trainable_variables]
    loss, correct = step(*batches[1], tf.constant([0, 1], tf.int32))
    assert np.isfinite(float(loss)) and 0 <= float(correct) <= 32
    assert any(not np.array_equal(w, v.numpy()) for w, v in zip(weights, model.trainable_variables, strict=True))


HOLDOUT = {"holdout": {"share": 0.2, "seed": 0}}


@pytest.mark.slow
def test_fst_removes_the_sunglasses_backdoor_that_fine_tuning_keeps(preset):
    """LR 0.001, 10 epochs: FST takes the sunglasses ASR from 99.7 % to 0 at CA 96 % (held-out CA 99 %), where
    plain fine-tuning at the same LR leaves 72 %."""
    loaded = preset["sunglasses"]
    plain = points_of("finetune", {"threshold": 0.0, "lr": 0.001, "epochs": 10, "layers": [], "seed": 0}, loaded)
    fst = points_of("fst", {"lr": 0.001, "epochs": 10, "fst_alpha": 0.2, "seed": 0} | HOLDOUT, loaded)
    assert fst[0]["before"]["asr"]["sunglasses"] > 95 and asr(plain[10]) > 50, asr(plain[10])
    assert asr(fst[10]) < 5 and fst[10]["ca"] > 90 and fst[10]["valid_acc"] > 90, (asr(fst[10]), fst[10]["ca"])


@pytest.mark.slow
def test_sau_unlearns_the_sunglasses_backdoor_in_a_few_epochs(preset):
    """LR 0.001, 3-step PGD within 0.2 (L-infinity), on the 80 % of the clean validation set a repair may use:
    the sunglasses ASR falls from 99.7 % to 0 in one epoch and CA recovers to 84 % by the fourth (94 % with the
    whole set)."""
    loaded = preset["sunglasses"]
    config = {"lr": 0.001, "epochs": 4, "sau_eps": 0.2, "sau_l2": 0, "sau_steps": 3, "seed": 0} | HOLDOUT
    points = points_of("sau", config, loaded)
    assert points[0]["before"]["asr"]["sunglasses"] > 95
    assert asr(points[4]) < 5 and points[4]["ca"] > 75, (asr(points[4]), points[4]["ca"])


@pytest.mark.slow
def test_ibau_unlearns_the_sunglasses_backdoor_in_three_rounds(preset):
    """LR 0.001, K 5, radius 10: after three rounds the ASR is 0 (from 99.7 %) at CA 95 %."""
    loaded = preset["sunglasses"]
    points = points_of(
        "i-bau", {"lr": 0.001, "epochs": 3, "ibau_k": 5, "ibau_radius": 10.0, "seed": 0} | HOLDOUT, loaded
    )
    assert points[0]["before"]["asr"]["sunglasses"] > 95
    assert asr(points[3]) < 10 and points[3]["ca"] > 85, (asr(points[3]), points[3]["ca"])


def test_only_the_variants_that_prune_say_how_their_pruning_departs_from_the_paper():
    from defenses.methods import METHODS

    assert "Threshold rule" in METHODS["fine-prune"].deviations and "Threshold rule" in METHODS["prune-only"].deviations
    assert METHODS["fine-tune"].deviations == ""  # it prunes nothing: a newcomer read the rule on its page
