"""GoodNets composed from a run's repaired network or from an upload, and what is handed out of them: a run's
network for Keras 2, and a GoodNet's standalone bundle (each built once per content and kept)."""

import shutil
import tempfile
import threading
import zipfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.db import transaction

from webapp.lab.inference import badnet_model, cached_model, fit_for_the_web, repaired_model, strip_detector
from webapp.lab.limits import model_limits
from webapp.lab.models import BadNet, GoodNet, Run


def run_network(run: Run, position: int | None = None) -> Path | None:
    """The file of a finished run's repaired network at `position` (default: its last point), or None: runs
    keep the network of their last epoch (ANP: of every tau), as their job kind says."""
    from defenses.methods import JOB_KINDS

    kind = JOB_KINDS.get(run.kind)
    if kind is None or run.status != Run.DONE:
        return None
    position = run.total_positions - 1 if position is None else position
    name = kind.network_at(run.config, position, run.badnet.report)
    path = run.artifact_dir() / name if name else None
    return path if path is not None and path.exists() else None


def keras2_export(run: Run, weights: bool = False) -> Path:
    """The run's repaired network (of its last point) for the Keras 2 API: the full model (.h5), or with
    `weights` the weights of its BadNet's architecture preset. Written once and kept in the run's folder (two
    requests at once write it once; it goes with the run). Raises ValueError when the run keeps no network or
    (weights) its BadNet has no preset, ModelRefused when the network is too large for the web server, and
    defenses.export.ExportRefused when Keras 2 cannot express the network."""
    from defenses.export import save_keras2_model, save_keras2_weights
    from defenses.models import file_digest

    path = run_network(run)
    if path is None:
        raise ValueError(f"Run {run.pk} keeps no repaired network: only finished repairs keep one.")
    if weights and not run.badnet.arch:
        raise ValueError(f"{run.badnet.name} has no architecture preset: download the full model instead.")
    fit_for_the_web(run.badnet)
    name = "repaired_net_keras2_weights.h5" if weights else "repaired_net_keras2.h5"

    def build(partial: Path) -> None:
        model = cached_model(str(path), file_digest(path), None)[0]
        if weights:
            save_keras2_weights(model, partial, run.badnet.arch)
        else:
            save_keras2_model(model, partial)

    return built_once(path.parent / "exports" / f"{path.stem}-{name}", build)  # per network file (ANP's taus)


def compose_from_run(run: Run, name: str, user, position: int | None = None) -> GoodNet:
    """A GoodNet from a finished run's repaired network (at `position`, default its last point)."""
    from defenses.models import file_digest

    path = run_network(run, position)
    if path is None:
        raise ValueError(
            f"Run {run.pk} keeps no repaired network at that point: finished repairs keep their last "
            "epoch's (ANP: every tau's)."
        )
    return GoodNet.objects.create(
        team=run.team, owner=user, name=name, badnet=run.badnet, run=run, run_file=path.name, sha256=file_digest(path)
    )


def compose_from_upload(badnet: BadNet, path: Path, original_name: str, name: str, user) -> GoodNet:
    """A GoodNet from a BadNet and a repaired network made elsewhere, checked in the sandbox like any
    upload (ModelRefused says why not) and required to have the BadNet's input shape and classes."""
    from defenses.modelcheck import ModelRefused
    from defenses.models import file_digest, verify_model_file

    report = verify_model_file(path, limits=model_limits())
    if report.n_classes != badnet.n_classes or list(report.input_shape) != list(badnet.report["input_shape"]):
        raise ModelRefused(
            f"{original_name} answers {report.n_classes} classes for inputs {tuple(report.input_shape)}; the BadNet "
            f"{badnet.name!r} has {badnet.n_classes} classes for {tuple(badnet.report['input_shape'])}. "
            "Upload the repaired version of this BadNet."
        )
    with open(path, "rb") as handle, transaction.atomic():
        return GoodNet.objects.create(
            team=badnet.team,
            owner=user,
            name=name,
            badnet=badnet,
            file=File(handle, name=Path(path).name),
            original_name=original_name,
            sha256=file_digest(path),
        )


BUNDLE_BUILDS = threading.BoundedSemaphore(settings.MAX_BUNDLE_BUILDS)  # builds at once in this process


def built_once(kept: Path, build) -> Path:
    """`kept`, made by `build(partial)` the first time it is asked for and kept from then on: a lock file in its
    folder lets one request build it while the others wait and then find it; a failed build leaves nothing."""
    import fcntl

    kept.parent.mkdir(parents=True, exist_ok=True)
    with open(kept.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not kept.exists():
            partial = kept.with_name(f"partial-{kept.name}")
            try:
                build(partial)
                partial.replace(kept)
            finally:
                partial.unlink(missing_ok=True)
    return kept


def cached_bundle(goodnet: GoodNet) -> Path:
    """The GoodNet's bundle, built once for its content (GoodNet.bundle_key) and kept beside its other files:
    a rebuild cost 856 MB of temporary disk and 47 s of CPU per request on a large network. Two requests at
    once build it once (built_once); at most MAX_BUNDLE_BUILDS are built at a time in a process, and none when
    the disk's free space is under the reserve. Raises ModelRefused (too large for the web server) or OSError
    (no disk) with the reason."""
    from webapp.lab.storage import free_disk

    folder = goodnet.bundle_dir()

    def build(partial: Path) -> None:
        if free_disk() < settings.DISK_RESERVE_BYTES:
            raise OSError(f"the server has less than {settings.DISK_RESERVE_BYTES:,} bytes of disk free")
        for old in folder.glob("goodnet-*.zip"):  # bundles of an earlier calibration or name
            old.unlink(missing_ok=True)
        with BUNDLE_BUILDS:
            archive = bundle_zip(goodnet)
        try:
            shutil.move(archive, partial)
        finally:
            shutil.rmtree(archive.parent, ignore_errors=True)

    return built_once(folder / f"goodnet-{goodnet.pk}-{goodnet.bundle_key()}.zip", build)


def bundle_zip(goodnet: GoodNet) -> Path:
    """The GoodNet's standalone bundle (both networks for Keras 3 and Keras 2, bundle.json, README.txt, eval.py)
    as a zip file in a temporary folder; the caller removes the folder."""
    from defenses.goodnet import GoodNet as Pair
    from defenses.goodnet import export_bundle

    scratch = Path(tempfile.mkdtemp(prefix="prunelab-bundle-"))
    try:
        pair = Pair(badnet_model(goodnet.badnet), repaired_model(goodnet), goodnet.badnet.divisor)
        extra = {"name": goodnet.name, "badnet": goodnet.badnet.name}
        preset = goodnet.badnet.arch or None
        folder = export_bundle(pair, scratch / "goodnet", extra, detector=strip_detector(goodnet), preset=preset)
        archive = scratch / f"goodnet-{goodnet.pk}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
            for item in sorted(folder.iterdir()):
                out.write(item, f"goodnet-{goodnet.pk}/{item.name}")
        return archive
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
