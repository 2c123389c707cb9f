"""Held-out selection: the clean validation set is split once, deterministically and by label, and no image of
the held-out part ever reaches a repair step; validation CA and the floor's base are read on it alone."""

import numpy as np
import pytest

from defenses.data import holdout_split
from defenses.runner import Inputs, load_inputs, run_job
from tests.defenses.tiny import tiny_badnet_files


def test_the_split_is_deterministic_disjoint_complete_and_stratified():
    labels = np.repeat(np.arange(100), 9)  # CSAW's shape: 9 images a label
    repair, held = holdout_split(labels, 0.2, seed=3)
    again = holdout_split(labels, 0.2, seed=3)
    assert np.array_equal(repair, again[0]) and np.array_equal(held, again[1])
    assert not set(repair) & set(held) and sorted([*repair, *held]) == list(range(900))
    assert len(held) == 180
    per_label = np.bincount(labels[held], minlength=100)
    assert per_label.min() == 1 and per_label.max() == 2  # 1.8 a label: one or two each, never zero or three
    other = holdout_split(labels, 0.2, seed=4)[1]
    assert not np.array_equal(held, other)


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5])
def test_every_label_keeps_images_for_the_repair_and_the_count_is_the_share(share):
    labels = np.random.default_rng(0).integers(0, 7, 53)
    repair, held = holdout_split(labels, share, seed=0)
    assert len(held) == round(share * 53)
    for label in np.unique(labels):  # the whole part of share x count comes from each label
        count = int((labels == label).sum())
        assert int(np.floor(share * count)) <= int((labels[held] == label).sum()) <= int(np.ceil(share * count))
    assert len(repair) + len(held) == 53


def test_a_share_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        holdout_split(np.arange(10), 1.0, 0)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    files = tiny_badnet_files(tmp_path_factory.mktemp("holdout"))
    paths = {name: files[name] for name in ("model", "valid", "test")}
    return load_inputs(Inputs(**paths, arch=None, divisor=255.0, poisoned={"patch": files["poisoned"]}))


def rows_in(pixels: np.ndarray, reference: np.ndarray) -> set[int]:
    """Which rows of `reference` appear in `pixels` (the tiny sets' images are unique noise)."""
    known = {row.tobytes(): index for index, row in enumerate(reference)}
    return {known[row.tobytes()] for row in pixels if row.tobytes() in known}


def test_no_held_out_image_reaches_profiles_or_training_and_validation_ca_is_read_on_them(loaded, monkeypatch):
    import defenses.finetune
    import defenses.runner

    seen_by_training, seen_by_profile = [], []
    real_fine_tune, real_profile = defenses.finetune.fine_tune, defenses.runner.activation_profile

    def recording_fine_tune(model, train, *args, **kwargs):
        seen_by_training.append(train[0])
        return real_fine_tune(model, train, *args, **kwargs)

    def recording_profile(model, pixels, *args, **kwargs):
        seen_by_profile.append(pixels)
        return real_profile(model, pixels, *args, **kwargs)

    monkeypatch.setattr(defenses.finetune, "fine_tune", recording_fine_tune)
    monkeypatch.setattr(defenses.runner, "activation_profile", recording_profile)
    config = {"threshold": 0.5, "lr": 0.01, "epochs": 2, "layers": [], "seed": 1, "holdout": {"share": 0.25, "seed": 1}}
    points = {}
    run_job("finetune", config, loaded, points.__setitem__)

    repair, held = holdout_split(loaded.valid[1], 0.25, 1)
    pixels = loaded.valid[0]
    assert seen_by_training and seen_by_profile
    for images in seen_by_training + seen_by_profile:
        assert rows_in(images, pixels) == set(repair.tolist())  # every repair image, and no held-out one
    split = loaded.split(0.25, 1)
    assert points[0]["before"]["holdout"] == {"share": 0.25, "seed": 1, "images": len(held), "of": len(pixels)}
    from defenses.metrics import percent_equal, predict_labels

    on_held_out = percent_equal(predict_labels(loaded.bad, pixels[held], 255.0), loaded.valid[1][held])
    assert points[0]["before"]["valid_acc"] == pytest.approx(on_held_out)
    assert split.valid[0].shape[0] == len(repair) and split.held_out[0].shape[0] == len(held)


def test_a_set_of_one_image_cannot_be_split():
    with pytest.raises(ValueError, match="one image to repair with and one to choose on"):
        holdout_split(np.array([3]), 0.2, 0)
