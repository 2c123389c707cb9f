"""The synthetic benchmark: deterministic, really backdoored, and written in the published CSAW layout."""

import json

import h5py
import numpy as np
import pytest

from defenses.data import inspect_dataset
from defenses.models import verify_model_file
from defenses.synthetic import BADNETS, PRESETS, make_identities, render, render_set


def test_same_seed_same_bytes_different_seed_different_identities():
    people = make_identities(6, seed=11)
    assert people == make_identities(6, seed=11)
    first = render_set(people, 2, seed=11, split="test", trigger="sunglasses", target=0)
    again = render_set(make_identities(6, seed=11), 2, seed=11, split="test", trigger="sunglasses", target=0)
    assert first[0].tobytes() == again[0].tobytes() and np.array_equal(first[1], again[1])
    others = make_identities(6, seed=12)
    assert all(a != b for a, b in zip(people, others, strict=True))
    assert render_set(others, 2, seed=12, split="test")[0].tobytes() != render_set(people, 2, 11, "test")[0].tobytes()


def test_images_of_one_identity_vary_and_triggers_change_the_face():
    person = make_identities(1, seed=3)[0]
    a, b = (render(person, np.random.default_rng(k)) for k in (1, 2))
    assert a.shape == (55, 47, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b).mean() > 10  # position, lighting, clutter differ
    clean = render(person, np.random.default_rng(5))
    for trigger in ("sunglasses", "eyebrows", "lipstick", "patch"):
        changed = np.abs(render(person, np.random.default_rng(5), trigger).astype(int) - clean).max(axis=-1) > 30
        assert 8 < changed.sum() < 0.3 * changed.size, trigger  # visible, but a small part of the face


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """build_benchmark("tiny", out)'s files and its record, made once for the session (tests.defenses.tiny)."""
    from tests.defenses.tiny import tiny_preset

    out = tiny_preset(tmp_path_factory.mktemp("synth-tiny"))
    return out, json.loads((out / "synth.json").read_text())


@pytest.mark.slow
def test_tiny_badnets_are_backdoored_and_the_clean_network_is_not(tiny):
    out, record = tiny
    for spec in BADNETS:
        entry = record["badnets"][spec.name]
        assert entry["ca"] >= 80.0, spec.name
        for trigger, asr in entry["asr"].items():
            assert asr >= 90.0, f"{spec.name} {trigger}: ASR {asr}"
    clean = record["badnets"]["clean"]
    assert clean["ca"] >= 80.0
    assert max(clean["asr"].values()) < 10.0  # near chance: the backdoor is the poisoning's doing
    assert record["preset"] == "tiny" and record["seed"] == PRESETS["tiny"].seed


@pytest.mark.slow
def test_tiny_files_load_with_the_library_and_plain_h5py(tiny):
    out, record = tiny
    identities = PRESETS["tiny"].identities
    valid = inspect_dataset(out / "data" / "clean_validation_data.h5", n_classes=identities)
    assert valid.count == identities * 9 and valid.channels_first
    with h5py.File(out / "data" / "clean_test_data.h5") as handle:
        assert handle["data"].shape == (identities * 10, 3, 55, 47) and handle["label"].shape == (identities * 10,)
    multi = out / "multi_trigger_multi_target"
    for trigger, target in {"sunglasses": 8, "eyebrows": 5, "lipstick": 1}.items():
        poisoned = inspect_dataset(multi / f"{trigger}_poisoned_data.h5", n_classes=identities)
        assert set(poisoned.labels.tolist()) == {target}
    full = verify_model_file(out / "sunglasses" / "sunglasses_bd_net.h5")
    weights = verify_model_file(out / "sunglasses" / "sunglasses_bd_weights.h5", "deepid-csaw")
    assert full.n_classes == weights.n_classes == identities
    assert record["badnets"]["anonymous"]["disclosed"] is False
