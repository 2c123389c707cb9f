"""Neural Cleanse (defenses.cleanse): the stamp and the anomaly index as the paper defines them, and on a small
network with a planted patch backdoor, the target label flagged with a small reversed mask on the patch."""

import numpy as np
import pytest

from defenses.cleanse import ScanSettings, anomaly_indices, flagged_labels, scan, scan_image_passes, stamp
from defenses.methods import job_kind
from tests.defenses.tiny import add_trigger, palette_badnet


def test_a_stamp_is_one_minus_m_times_x_plus_m_times_p():
    pixels = np.full((2, 3, 3, 3), 100.0, dtype=np.float32)
    mask = np.zeros((3, 3), dtype=np.float32)
    mask[0, 0], mask[1, 1] = 1.0, 0.25
    pattern = np.full((3, 3, 3), 200.0, dtype=np.float32)
    stamped = stamp(pixels, mask, pattern)
    assert stamped[0, 0, 0, 0] == 200.0 and stamped[1, 1, 1, 2] == 125.0 and stamped[0, 2, 2, 1] == 100.0


def test_the_papers_anomaly_index_is_the_distance_below_the_median_in_units_of_1_4826_mad():
    norms = {0: 2.0, 1: 10.0, 2: 11.0, 3: 12.0, 4: 13.0}  # median 11, deviations 9, 1, 0, 1, 2: MAD 1
    index = anomaly_indices(norms, log=False)
    assert index[0] == pytest.approx(9 / 1.4826) and index[4] == pytest.approx(-2 / 1.4826)
    assert flagged_labels(index) == [0]  # 6.07 > 2; label 4 is anomalous on the large side, not a target
    # against a reference (the random labels of a pre-screened scan), the median and MAD are the reference's
    assert anomaly_indices({7: 5.0}, reference=[10.0, 11.0, 12.0], log=False)[7] == pytest.approx(6 / 1.4826)
    assert anomaly_indices({0: 1.0, 1: 1.0}) == {0: 0.0, 1: 0.0}  # no spread: nothing is anomalous


def test_prunelabs_index_is_the_same_rule_on_log_l1_so_a_spread_of_clean_norms_does_not_hide_a_target():
    # the 40 mask norms a 300-step scan found on the tiny preset's patch BadNet (target first: 4.8)
    found = [4.8, 41.5, 50.4, 62.5, 64.9, 70.2, 70.8, 75.5, 77.7, 79.0, 84.2, 91.9, 96.9, 100.6, 102.8, 112.4]
    found += [114.6, 116.5, 123.4, 128.8, 129.7, 144.4, 144.9, 146.6, 147.1, 149.3, 149.8, 169.4, 205.0, 205.3]
    found += [207.5, 223.1, 225.5, 228.4, 231.5, 272.8, 278.9, 322.9, 341.9, 361.4]
    norms = dict(enumerate(found))
    assert anomaly_indices(norms, log=False)[0] < 2  # the paper's index misses a mask 25 times under the median
    logs = np.log(found)
    median = np.median(logs)
    expected = (median - np.log(4.8)) / (1.4826 * np.median(np.abs(logs - median)))
    assert anomaly_indices(norms)[0] == pytest.approx(expected) and expected > 4
    assert flagged_labels(anomaly_indices(norms)) == [0]


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
    stages = []
    result = scan(model, pixels, 255.0, 24, ScanSettings(steps=300, group=24, batch=32), on_stage=stages.append)
    assert result.flagged == [0], {k: round(v, 2) for k, v in result.anomaly.items()}
    # one group of 24: said when it starts and when it ends
    assert stages == ["Neural Cleanse scan: 0 of 24 labels", "Neural Cleanse scan: 24 of 24 labels"]
    target = result.triggers[0]
    others = sorted(t.norm for label, t in result.triggers.items() if label != 0)
    assert target.norm < 12 and target.norm < others[0] / 3  # under 10 % of the 120 positions
    assert patch_share(target.mask) > 0.75 and target.success > 85
    assert not result.prescreened


@pytest.mark.slow
def test_a_prescreened_scan_runs_the_smallest_and_a_random_sample_fully_and_still_flags_the_target(badnet):
    model, (pixels, _) = badnet
    settings = ScanSettings(steps=300, group=6, batch=32, prescreen_above=10, prescreen_steps=60, prescreen_keep=4)
    stages = []
    result = scan(model, pixels, 255.0, 24, settings, on_stage=stages.append)
    assert stages[:3] == [
        "Neural Cleanse scan, short runs: 0 of 24 labels",
        "Neural Cleanse scan, short runs: 6 of 24 labels",
        "Neural Cleanse scan, short runs: 12 of 24 labels",
    ]
    assert stages[-1] == "Neural Cleanse scan, full runs: 8 of 8 labels"
    full = [label for label, t in result.triggers.items() if t.steps == 300]
    assert result.prescreened and len(full) == 8 and 0 in full  # 4 smallest + 4 at random
    assert result.flagged and result.flagged[0] == 0, {k: round(v, 2) for k, v in result.anomaly.items()}


def test_a_scans_cost_counts_every_reversal_step_and_the_prescreen_runs_most_labels_short():
    assert scan_image_passes(10, ScanSettings(steps=300, batch=24)) == 10 * 300 * 24
    settings = ScanSettings(steps=300, batch=24, prescreen_above=200, prescreen_steps=40, prescreen_keep=40)
    assert scan_image_passes(1283, settings) == (1283 * 40 + 80 * 300) * 24  # CSAW: 1.8 M images
    # nc-unlearn's cost is its epochs and its scan, in passes over the clean validation set
    unlearn = job_kind("nc-unlearn")
    config = {"lr": 0.001, "epochs": 10, "scan_steps": 300, "seed": 0}
    assert unlearn.cost(config, 900, 10) == 10 + 10 * 300 * 24 / 900
    assert unlearn.cost(config, 11_547, 1283) == pytest.approx(10 + 1_807_680 / 11_547)
    assert job_kind("finetune").cost({"epochs": 10}, 900, 1283) == 10  # no scan: labels do not count
