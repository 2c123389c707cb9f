"""Neural Cleanse unlearning (Wang, Yao, Shan, Li, Viswanath, Zheng and Zhao, "Neural Cleanse: Identifying and
Mitigating Backdoor Attacks in Neural Networks", IEEE S&P 2019, section VI.C): scan the BadNet for reversed
triggers (defenses.cleanse), then fine-tune it on the clean validation set with 20 % of its images stamped
with the reversed trigger of a flagged label and keeping their true labels, so the network unlearns the link
from trigger to target.

Deviations, said on the page: Adam as in every Prunelab fine-tuning (the paper: one epoch of SGD at lr 0.01);
with several flagged labels the stamped images take their triggers in turn; when no label is flagged there is
nothing to unlearn, so the run is plain fine-tuning and its points say so (`flagged` is empty): the known
limit of large physical triggers such as sunglasses (Wenger et al., CVPR 2021).

Jobs: one `nc-unlearn` job per (LR, scan steps, seed) scans once, trains to the largest epoch count asked for
and stores every epoch (position = epoch; 0 is the BadNet itself, with the scan's findings).
"""

from dataclasses import dataclass, replace

import numpy as np

from defenses.methods import Method, Parameter, register
from defenses.methods.common import (
    EPOCHS,
    LEARNING_RATES,
    LR_EPOCH_CHARTS,
    SEED,
    by_learning_rate,
    epoch_job,
    lr_epoch_columns,
    resumable_settings,
    train_and_report,
)

SCAN_STEPS = Parameter(
    "scan_steps",
    "Neural Cleanse: steps per label",
    int,
    300,
    10,
    5000,
    axis=False,
    help="optimisation steps of each label's reversed trigger",
)
STAMPED_SHARE = 0.2  # the paper's share of the fine-tuning images that carry a reversed trigger


@dataclass(frozen=True)
class UnlearnConfig:
    lr: float
    epochs: int
    scan_steps: int
    seed: int = 0


def unlearning_set(pixels: np.ndarray, labels: np.ndarray, triggers: list, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The clean images with STAMPED_SHARE of them (chosen at random) stamped with the triggers in turn,
    labels unchanged; the clean set itself when there is no trigger."""
    from defenses.cleanse import stamp

    out = pixels.astype(np.float32, copy=True)
    if not triggers:
        return out, labels
    chosen = np.random.default_rng(seed).permutation(len(pixels))[: int(round(STAMPED_SHARE * len(pixels)))]
    for number, trigger in enumerate(triggers):
        picked = chosen[number :: len(triggers)]
        out[picked] = stamp(pixels[picked], trigger.mask, trigger.pattern)
    return out, labels


def findings(result) -> dict:
    """What the scan found, for the run's first point: flagged labels with their anomaly index and mask
    size, and whether it was pre-screened."""
    return {
        "flagged": result.flagged,
        "anomaly": {str(label): round(result.anomaly[label], 3) for label in result.flagged},
        "mask_l1": {str(label): round(result.triggers[label].norm, 2) for label in result.flagged},
        "prescreened": result.prescreened,
        "scan_seconds": round(result.seconds, 1),
    }


def run_unlearn(loaded, config: dict, report_point, should_stop=None, artifact_dir=None):
    """Scan, then fine-tune on the unlearning set; reports position 0 (the BadNet, with the scan's findings)
    and every epoch; saves the network."""
    from defenses.cleanse import ScanSettings, scan
    from defenses.finetune import seed_everything
    from defenses.runner import fresh_copy

    job = UnlearnConfig(**config)
    seed_everything(int(job.seed))
    pixels, labels = loaded.valid
    scanning = ScanSettings(steps=int(job.scan_steps), seed=int(job.seed))
    result = loaded.remember(
        ("scan", scanning),
        lambda: scan(
            loaded.bad, pixels, loaded.divisor, loaded.report.n_classes, scanning, should_stop, loaded.on_stage
        ),
    )
    train = unlearning_set(pixels, labels, [result.triggers[label] for label in result.flagged], int(job.seed))
    settings = resumable_settings(float(job.lr), int(job.epochs), int(job.seed), artifact_dir)
    return train_and_report(
        loaded,
        fresh_copy(loaded.bad),
        settings,
        report_point,
        should_stop,
        artifact_dir,
        train=train,
        first_point=findings(result),
    )


def describe(config: dict) -> str:
    return (
        f"Neural Cleanse scan ({config['scan_steps']} steps a label), then {config['epochs']} epochs of "
        f"unlearning at LR {config['lr']:g} (seed {config.get('seed', 0)})"
    )


def scan_units(config: dict, n_valid: int, n_classes: int) -> float:
    """The scan before the epochs: every label's trigger reversal, in passes over the clean set."""
    from defenses.cleanse import ScanSettings, scan_image_passes

    return scan_image_passes(n_classes, ScanSettings(steps=int(config["scan_steps"]))) / n_valid


UNLEARN_JOB = replace(
    epoch_job("nc-unlearn", run_unlearn, describe, "unlearning epoch (0: the BadNet)"), setup_units=scan_units
)
NC_UNLEARN = register(
    Method(
        name="nc-unlearn",
        title="Neural Cleanse unlearning",
        paper="Wang, Yao, Shan, Li, Viswanath, Zheng and Zhao, Neural Cleanse, IEEE S&P 2019",
        summary="reverse-engineer each label's smallest trigger, then fine-tune on clean images stamped with "
        "the flagged labels' triggers, keeping their true labels",
        parameters=(LEARNING_RATES, EPOCHS, SCAN_STEPS, SEED),
        columns=lr_epoch_columns("unlearning epochs"),
        plan=by_learning_rate("nc-unlearn", SCAN_STEPS),
        charts=LR_EPOCH_CHARTS,
        jobs=(UNLEARN_JOB,),
        sweep={"learning_rates": [0.001], "epochs": [10]},
        deviations="Adam (the paper: SGD); several flagged labels' triggers stamped in turn; with no label "
        "flagged the run is plain fine-tuning (large physical triggers escape the scan).",
    )
)
