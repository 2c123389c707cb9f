"""Neural Cleanse (defenses.cleanse): the stamp and the anomaly index as the paper defines them, and on a small
network with a planted patch backdoor, the target label flagged with a small reversed mask on the patch."""

import numpy as np
import pytest

from defenses.cleanse import ScanSettings, anomaly_indices, flagged_labels, scan, stamp
from tests.defenses.tiny import add_trigger, palette_badnet


def test_a_stamp_is_one_minus_m_times_x_plus_m_times_p():
    pixels = np.full((2, 3, 3, 3), 100.0, dtype=np.float32)
    mask = np.zeros((3, 3), dtype=np.float32)
    mask[0, 0], mask[1, 1] = 1.0, 0.25
    pattern = np.full((3, 3, 3), 200.0, dtype=np.float32)
    stamped = stamp(pixels, mask, pattern)
    assert stamped[0, 0, 0, 0] == 200.0 and stamped[1, 1, 1, 2] == 125.0 and stamped[0, 2, 2, 1] == 100.0


def test_the_anomaly_index_is_the_distance_below_the_median_in_units_of_1_4826_mad():
    norms = {0: 2.0, 1: 10.0, 2: 11.0, 3: 12.0, 4: 13.0}  # median 11, deviations 9, 1, 0, 1, 2: MAD 1
    index = anomaly_indices(norms)
    assert index[0] == pytest.approx(9 / 1.4826) and index[4] == pytest.approx(-2 / 1.4826)
    assert flagged_labels(index) == [0]  # 6.07 > 2; label 4 is anomalous on the large side, not a target
    # against a reference (the random labels of a pre-screened scan), the median and MAD are the reference's
    assert anomaly_indices({7: 5.0}, reference=[10.0, 11.0, 12.0])[7] == pytest.approx(6 / 1.4826)
    assert anomaly_indices({0: 1.0, 1: 1.0}) == {0: 0.0, 1: 0.0}  # no spread: nothing is anomalous


@pytest.fixture(scope="module")
def badnet():
    return palette_badnet(24, target=0, seed=0)


def patch_share(mask: np.ndarray) -> float:
    """The share of a mask's mass on the trigger's 2x2 patch grown by one pixel (a conv network also answers
    to the patch moved by a pixel, so the reversed mask may sit a pixel off)."""
    return float(mask[-4:, -4:].sum() / mask.sum())


@pytest.mark.slow
def test_the_planted_target_is_the_one_flagged_its_mask_is_small_and_on_the_patch(badnet):
    model, (pixels, labels) = badnet
    stamped = add_trigger(pixels)
    assert np.mean(np.argmax(model.predict(stamped / 255.0, verbose=0), 1) == 0) > 0.95  # the backdoor works
    result = scan(model, pixels, 255.0, 24, ScanSettings(steps=300, group=24, batch=32))
    assert result.flagged == [0], {k: round(v, 2) for k, v in result.anomaly.items()}
    target = result.triggers[0]
    others = sorted(t.norm for label, t in result.triggers.items() if label != 0)
    assert target.norm < 12 and target.norm < others[0] / 3  # under 10 % of the 120 positions
    assert patch_share(target.mask) > 0.75 and target.success > 85
    assert not result.prescreened


@pytest.mark.slow
def test_a_prescreened_scan_runs_the_smallest_and_a_random_sample_fully_and_still_flags_the_target(badnet):
    model, (pixels, _) = badnet
    settings = ScanSettings(steps=300, group=24, batch=32, prescreen_above=10, prescreen_steps=60, prescreen_keep=4)
    result = scan(model, pixels, 255.0, 24, settings)
    full = [label for label, t in result.triggers.items() if t.steps == 300]
    assert result.prescreened and len(full) == 8 and 0 in full  # 4 smallest + 4 at random
    assert result.flagged and result.flagged[0] == 0, {k: round(v, 2) for k, v in result.anomaly.items()}
