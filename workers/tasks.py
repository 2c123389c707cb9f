"""Celery tasks. Each is thin: load inputs, call `defenses/`, store results through Django models.
TensorFlow is imported inside the task body only (the worker's parent process never imports it)."""

import errno
import logging
import socket
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from webapp.celery_app import CALIBRATE_STRIP, COMPUTE_PROFILE, COMPUTE_SCAN, EXECUTE_RUN, RUN_SEARCH, app

log = logging.getLogger(__name__)


@app.task(name="prunelab.echo")
def echo(payload: dict) -> dict:
    """Round-trip check for the queue: returns the payload with the answering host's name."""
    return {"payload": payload, "host": socket.gethostname()}


def with_user_names(message: str, names: dict[str, str]) -> str:
    """Stored files are team/kind/uuid.ext; say the names the user uploaded them under instead."""
    for stored, original in names.items():
        message = message.replace(stored, original)
    return message


def user_names(*rows) -> dict[str, str]:
    """Stored file name -> the name it was uploaded under, for rows with a `file` and an `original_name`."""
    return {Path(row.file.name).name: row.original_name for row in rows}


def load_checked(badnet, *datasets) -> tuple:
    """A task's inputs: the BadNet's network (checked under the web's limits, ModelRefused if not) and each
    dataset's (pixels, labels), checked against the network (DataError if a set does not fit)."""
    from defenses.data import inspect_dataset, load_dataset
    from defenses.models import load_model
    from webapp.lab import limits

    model, report = load_model(badnet.file.path, badnet.arch or None, limits.model_limits())
    sets = []
    for dataset in datasets:
        info = inspect_dataset(dataset.file.path, report.input_shape, report.n_classes, limits.dataset_limits())
        sets.append(load_dataset(info))
    return model, report, sets


def failure_message(error: Exception, worker: str) -> str:
    """What a user reads on the experiment page when a run failed for a reason that is not their input."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return (
            f"The disk of worker {worker} is full ({error}); the results up to here are kept. Free space "
            "on that machine (or ask an operator), then press Re-run."
        )
    return f"{type(error).__name__}: {error}"


@app.task(
    name=EXECUTE_RUN,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.LONGEST_RUN_SECONDS,
    time_limit=settings.LONGEST_RUN_SECONDS + 300,
)
def execute_run(self, run_id: int) -> str:
    """Run the planned job whose turn this message is (`Run.claim_turn`: fair share between teams; a
    redelivery resumes its own run) and store every point. Safe to deliver twice: a run is claimed by one
    delivery, and points are upserted by position, so a re-run never duplicates rows."""
    from webapp.lab.models import Run

    worker = self.request.hostname or socket.gethostname()
    queue = (self.request.delivery_info or {}).get("routing_key") or "cpu"
    run = Run.claim_turn(run_id, worker=worker, stale_after=settings.RUN_STALE_SECONDS, queue=queue)
    if run is None:
        return "skipped"
    return perform(run)


def job_inputs(inputs: dict):
    """A run's stored inputs (Experiment.run_inputs) as the runner's Inputs, with the operator's limits."""
    from defenses.runner import Inputs
    from webapp.lab import limits

    paths = {key: value for key, value in inputs.items() if key != "names"}
    return Inputs(**paths, model_limits=limits.model_limits(), dataset_limits=limits.dataset_limits())


def perform(run, loaded=None, keep_checkpoint: bool = False) -> str:
    """A claimed run's job end to end (on `loaded`, or its inputs loaded here), its end stored with the reason:
    done, cancelled or failed. `keep_checkpoint`: a search's rung, which the next rung extends."""
    from defenses.data import DataError
    from defenses.finetune import Cancelled
    from defenses.modelcheck import ModelRefused
    from defenses.runner import load_inputs, run_job
    from webapp.lab.models import Run, Status

    try:
        loaded = loaded or load_inputs(job_inputs(run.inputs))
        run_job(run.kind, run.config, loaded, run.record_point, run.should_stop, run.artifact_dir(), run.set_stage)
    except Cancelled:
        run.finish(Run.CANCELLED, "Cancelled by a user.")
        return Status.CANCELLED
    except (ModelRefused, DataError, FileNotFoundError) as refusal:
        run.finish(Run.FAILED, f"Bad input: {with_user_names(str(refusal), run.inputs.get('names', {}))}")
        return Status.FAILED
    except SoftTimeLimitExceeded:
        run.finish(Run.FAILED, f"Stopped at the time limit of {settings.LONGEST_RUN_SECONDS} s.")
        return Status.FAILED
    except Exception as error:  # a bug or a resource problem: the user sees it, an operator finds the trace
        log.exception("run %s failed", run.pk)
        run.finish(Run.FAILED, failure_message(error, run.worker))
        return Status.FAILED
    run.finish(Run.DONE, keep_checkpoint=keep_checkpoint)
    return Status.DONE


@app.task(
    name=RUN_SEARCH,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.LONGEST_RUN_SECONDS,
    time_limit=settings.LONGEST_RUN_SECONDS + 300,
)
def run_search(self, experiment_id: int) -> str:
    """A search experiment (defenses.search): its inputs loaded once, every rung of every trial an ordinary
    run of the experiment's team (webapp/lab/searches.py), the trials stored as they end. A second delivery
    continues from the stored trials."""
    from defenses.data import DataError
    from defenses.modelcheck import ModelRefused
    from defenses.runner import load_inputs
    from webapp.lab import searches
    from webapp.lab.models import Experiment, Status

    experiment = Experiment.objects.filter(pk=experiment_id).first()
    worker = self.request.hostname or socket.gethostname()
    if experiment is None or not searches.begin(experiment, worker):
        return "skipped"
    inputs = experiment.run_inputs()
    try:
        loaded = load_inputs(job_inputs(inputs))
        status = searches.carry_out(experiment, loaded, lambda run: perform(run, loaded, True), worker)
    except (ModelRefused, DataError, FileNotFoundError) as refusal:
        searches.end(experiment, Status.FAILED, f"Bad input: {with_user_names(str(refusal), inputs['names'])}")
        return Status.FAILED
    except SoftTimeLimitExceeded:
        searches.end(experiment, Status.FAILED, f"Stopped at the time limit of {settings.LONGEST_RUN_SECONDS} s.")
        return Status.FAILED
    except Exception as error:
        log.exception("search of experiment %s failed", experiment_id)
        searches.end(experiment, Status.FAILED, failure_message(error, worker))
        return Status.FAILED
    return status


@app.task(name=COMPUTE_PROFILE, acks_late=True, reject_on_worker_lost=True)
def compute_profile(profile_id: int) -> str:
    """A BadNet's activation profile on a clean dataset (for its detail page), stored on the Profile row."""
    from webapp.lab.models import Profile

    profile = Profile.objects.select_related("badnet", "dataset").get(pk=profile_id)
    from defenses.data import DataError
    from defenses.modelcheck import ModelRefused
    from defenses.pruning import activation_profile

    badnet, dataset = profile.badnet, profile.dataset
    try:
        model, _, [(pixels, _)] = load_checked(badnet, dataset)
        means = activation_profile(model, pixels, badnet.divisor)
    except (ModelRefused, DataError) as refusal:
        names = user_names(badnet, dataset)
        profile.status, profile.error = Profile.Status.FAILED, with_user_names(str(refusal), names)
    else:
        profile.status, profile.means = Profile.Status.DONE, {name: values.tolist() for name, values in means.items()}
    profile.save(update_fields=["status", "error", "means"])
    return profile.status


@app.task(
    name=COMPUTE_SCAN,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.LONGEST_RUN_SECONDS,
    time_limit=settings.LONGEST_RUN_SECONDS + 300,
)
def compute_scan(scan_id: int) -> str:
    """A BadNet's Neural Cleanse scan on a clean set (defenses.cleanse), stored on the TriggerScan row."""
    from webapp.lab.models import TriggerScan

    row = TriggerScan.objects.select_related("badnet", "dataset").filter(pk=scan_id).first()
    if row is None:
        return "gone"  # its BadNet or set was deleted while it was queued
    TriggerScan.objects.filter(pk=scan_id).update(status=TriggerScan.Status.RUNNING)
    from defenses.cleanse import scan
    from defenses.data import DataError
    from defenses.finetune import seed_everything
    from defenses.modelcheck import ModelRefused
    from webapp.lab.detection import scan_record

    badnet, dataset = row.badnet, row.dataset
    try:
        model, report, [(pixels, _)] = load_checked(badnet, dataset)
        seed_everything(0)
        result = scan(model, pixels, badnet.divisor, report.n_classes, on_stage=row.set_stage)
    except (ModelRefused, DataError) as refusal:
        row.status, row.error = TriggerScan.Status.FAILED, with_user_names(str(refusal), user_names(badnet, dataset))
    except Exception as error:  # the row must not stay "running": say it stopped, and why
        log.exception("scan %s failed", scan_id)
        row.status = TriggerScan.Status.FAILED
        row.error = f"The scan stopped on the worker ({error}). Press Scan again."
    else:
        row.status, row.result = TriggerScan.Status.DONE, scan_record(result, pixels[0])
    # an update, not a save: a row deleted meanwhile (deletion refuses it, but a race remains) is not an error
    stored = TriggerScan.objects.filter(pk=scan_id).update(
        status=row.status, error=row.error, result=row.result, stage=""
    )
    return row.status if stored else "gone"


@app.task(
    name=CALIBRATE_STRIP,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.LONGEST_RUN_SECONDS,
    time_limit=settings.LONGEST_RUN_SECONDS + 300,
)
def calibrate_strip(goodnet_id: int, test_id: int, poisoned_ids: list[int]) -> str:
    """STRIP for a GoodNet (defenses.strip): overlays and threshold from its clean validation set, then the
    detector figures on the test sets (defenses.goodnet.detector_figures), stored on the GoodNet row."""
    import io

    import numpy as np
    from django.core.files.base import ContentFile

    from defenses.data import DataError
    from defenses.finetune import seed_everything
    from defenses.goodnet import GoodNet as Pair
    from defenses.goodnet import detector_figures
    from defenses.modelcheck import ModelRefused
    from defenses.models import load_model
    from defenses.strip import fit_strip
    from webapp.lab import limits
    from webapp.lab.models import Dataset, GoodNet, Status

    goodnet = GoodNet.objects.select_related("badnet", "run", "strip_valid").filter(pk=goodnet_id).first()
    if goodnet is None:
        return "gone"  # deleted while queued
    # the page says so
    GoodNet.objects.filter(pk=goodnet_id, strip_status=Status.QUEUED).update(strip_status=Status.RUNNING)
    badnet, team, names = goodnet.badnet, goodnet.team_id, {}
    old_file = goodnet.strip_file.name
    try:
        test = Dataset.objects.filter(pk=test_id, team_id=team).first()
        poisoned = list(Dataset.objects.filter(pk__in=poisoned_ids, team_id=team))
        if goodnet.strip_valid is None or test is None or len(poisoned) != len(set(poisoned_ids)):
            raise ValueError("A set chosen for STRIP was deleted before a worker reached it; choose the sets again.")
        names = user_names(badnet, goodnet.strip_valid, test, *poisoned)
        bad, _, [(valid, _), clean, *triggered] = load_checked(badnet, goodnet.strip_valid, test, *poisoned)
        repaired, _ = load_model(goodnet.repaired_path, None, limits.model_limits())
        seed_everything(0)
        detector, _ = fit_strip(bad, valid, badnet.divisor, goodnet.strip_frr)
        sets = {dataset.metric_name: pixels for dataset, pixels in zip(poisoned, triggered, strict=True)}
        figures = detector_figures(Pair(bad, repaired, badnet.divisor), detector, clean, sets)
    except (ModelRefused, DataError, ValueError) as refusal:
        goodnet.strip_status, goodnet.strip_error = Status.FAILED, with_user_names(str(refusal), names)
    except Exception as error:  # the row must not stay "queued": say it stopped, and why
        log.exception("STRIP of GoodNet %s failed", goodnet_id)
        goodnet.strip_status, goodnet.strip_error = Status.FAILED, f"STRIP stopped on the worker ({error})."
    else:
        buffer = io.BytesIO()
        np.save(buffer, detector.overlays, allow_pickle=False)
        goodnet.strip_file.save("strip.npy", ContentFile(buffer.getvalue()), save=False)
        goodnet.strip_status, goodnet.strip_threshold, goodnet.figures = Status.DONE, detector.threshold, figures
    fields = ["strip_status", "strip_error", "strip_threshold", "strip_file", "figures"]
    stored = GoodNet.objects.filter(pk=goodnet_id).update(**{name: getattr(goodnet, name) for name in fields})
    if not stored:  # deleted meanwhile: its new overlays belong to no row
        if goodnet.strip_file.name != old_file:
            goodnet.strip_file.delete(save=False)
        return "gone"
    if old_file and old_file != goodnet.strip_file.name:  # one overlays file per GoodNet: the last calibration's
        goodnet.strip_file.storage.delete(old_file)
    return goodnet.strip_status
