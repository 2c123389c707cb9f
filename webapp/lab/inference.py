"""Answers from stored networks in the web process: the image-test form (and the networks that composition.py
exports, from the same cache).

TensorFlow is imported on first use only. Loaded networks are kept in a cache keyed by the file's sha256 (a
file's content, not its name, is what a network is), so a second image costs one forward pass. The cache is
bounded by the weights it holds, not by a count: six networks of the largest accepted size would pin
several GB in the web server (an attack review pinned 1.6 GB with two 58.7 M-weight uploads).
"""

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

from django.conf import settings

from webapp.lab.limits import dataset_limits, model_limits
from webapp.lab.models import BadNet, GoodNet, Status

TOP_CLASSES = 3


class ModelCache:
    """Loaded networks by (sha256, arch), least recently used first out, at most `max_weights` weights in
    all; a network larger than the whole budget is loaded for its request and not kept."""

    def __init__(self, max_weights: int):
        self.max_weights = max_weights
        self.entries: OrderedDict[tuple, tuple] = OrderedDict()  # key -> (model, report)
        self.lock = threading.Lock()

    def get(self, path: str, sha256: str, arch: str | None):
        key = (sha256, arch)
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        from defenses.models import load_model

        loaded = load_model(path, arch, model_limits())
        if loaded[1].params > self.max_weights:
            return loaded
        with self.lock:
            self.entries[key] = loaded
            while self.entries and sum(report.params for _, report in self.entries.values()) > self.max_weights:
                self.entries.popitem(last=False)
        return loaded


MODELS = ModelCache(settings.WEB_MODEL_CACHE_WEIGHTS)


def cached_model(path: str, sha256: str, arch: str | None):
    return MODELS.get(path, sha256, arch)


def fit_for_the_web(badnet: BadNet) -> None:
    """Refuse, before anything is loaded, a network larger than the web process's whole cache budget: loading
    it per request let 8 parallel image tests on a 61 M-weight BadNet take the web server to 7.8 GB."""
    params = int(badnet.report.get("params") or 0)
    if params > settings.WEB_MODEL_CACHE_WEIGHTS:
        from defenses.modelcheck import ModelRefused

        raise ModelRefused(
            f"{badnet.name} has {params:,} weights, more than the web server may hold "
            f"({settings.WEB_MODEL_CACHE_WEIGHTS:,}), so its image test is not run here. Test its images with "
            "the GoodNet bundle's eval.py on your own machine, or ask an operator to raise "
            "PRUNELAB_WEB_MODEL_CACHE_WEIGHTS."
        )


def badnet_model(badnet: BadNet):
    fit_for_the_web(badnet)
    return cached_model(badnet.file.path, badnet.sha256, badnet.arch or None)[0]


def repaired_model(goodnet: GoodNet):
    fit_for_the_web(goodnet.badnet)  # the repaired network is the BadNet's architecture, pruned
    return cached_model(str(goodnet.repaired_path), goodnet.sha256, None)[0]


@dataclass(frozen=True)
class Vote:
    label: int
    top: list[tuple[int, float]]  # (class, probability), most likely first


@dataclass(frozen=True)
class Answer:
    image: str
    note: str  # what was done to the image to fit the network ("" when nothing)
    label: int  # in 0..N; N means "poisoned" for a GoodNet
    n_classes: int
    bad: Vote
    repaired: Vote | None  # None when a BadNet alone answered
    thumbnail: str = ""  # the image as the network saw it (after resizing), a data: URL for the page
    entropy: float | None = None  # STRIP's entropy on the BadNet (a GoodNet with STRIP)
    threshold: float | None = None  # under it, STRIP calls the image poisoned

    @property
    def strip_flagged(self) -> bool:
        return self.entropy is not None and self.entropy < self.threshold

    @property
    def poisoned(self) -> bool:
        return self.label == self.n_classes


def vote(probabilities) -> Vote:
    order = probabilities.argsort()[::-1][:TOP_CLASSES]
    return Vote(label=int(order[0]), top=[(int(c), float(probabilities[c])) for c in order])


def classify(badnet: BadNet, goodnet: GoodNet | None, images: list[tuple[str, object]]) -> list[Answer]:
    """The class of each (name, file or path) image: the GoodNet's answer in [0, N] when one is given, else
    the BadNet's own. Raises defenses.data.DataError naming the first image that cannot be read."""
    import numpy as np

    from defenses.data import load_image
    from defenses.goodnet import goodnet_labels
    from defenses.metrics import predict_probabilities

    height, width = badnet.report["input_shape"][:2]
    loaded = [(name, load_image(source, (height, width))) for name, source in images]
    pixels = np.stack([image.pixels for _, image in loaded])
    bad = predict_probabilities(badnet_model(badnet), pixels, badnet.divisor)
    repaired = predict_probabilities(repaired_model(goodnet), pixels, badnet.divisor) if goodnet else None
    detector = strip_detector(goodnet) if goodnet else None
    entropy = None
    if detector is not None:
        from defenses.strip import entropies

        entropy = entropies(badnet_model(badnet), pixels, badnet.divisor, detector.overlays)
    flagged = detector.poisoned(entropy) if detector is not None else None
    labels = goodnet_labels(bad, repaired, flagged) if goodnet else bad.argmax(axis=1)
    return [
        Answer(
            image=name,
            note=image.note,
            label=int(labels[i]),
            n_classes=badnet.n_classes,
            bad=vote(bad[i]),
            repaired=vote(repaired[i]) if goodnet else None,
            thumbnail=thumbnail(image.pixels),
            entropy=None if entropy is None else float(entropy[i]),
            threshold=None if detector is None else detector.threshold,
        )
        for i, (name, image) in enumerate(loaded)
    ]


def strip_detector(goodnet: GoodNet):
    """The GoodNet's calibrated STRIP detector (defenses.strip.StripDetector), or None without one."""
    import numpy as np

    from defenses.strip import StripDetector

    if goodnet.strip_status != Status.DONE or not goodnet.strip_file:
        return None
    with goodnet.strip_file.open("rb") as handle:
        overlays = np.load(handle, allow_pickle=False)
    return StripDetector(overlays, goodnet.strip_threshold, goodnet.strip_frr)


def thumbnail(pixels) -> str:
    """A data: URL of an image's pixels (H x W x 3, 0..255) as PNG: what the network was shown."""
    import base64

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def answers_for(data: dict) -> list[Answer]:
    """Answers for a valid ClassifyForm: its uploaded images, then the samples it names from a stored set.
    Raises DataError or ModelRefused naming what cannot be used."""
    images = [(image.name, image) for image in data["images"]]
    if data["sample_dataset"]:
        images += sample_images(data["sample_dataset"], data["sample_indices"] or (0,))
    return classify(data["badnet"], data["goodnet"], images)


def sample_images(dataset, indices) -> list[tuple[str, object]]:
    """Images of a stored dataset as PNG files in memory, named after the set, number and label."""
    from PIL import Image

    from defenses.data import DataError, inspect_dataset, sample_pixels

    info = inspect_dataset(dataset.file.path, image_shape=None, limits=dataset_limits())
    pixels, labels = sample_pixels(info, max(max(indices), 0) + 1)
    images = []
    for index in indices:
        if not 0 <= index < len(pixels):  # ClassifyForm checks this against the set's count; the file decides
            raise DataError(f"{dataset.name} has {len(pixels)} images; there is no image {index}.")
        buffer = io.BytesIO()
        Image.fromarray(pixels[index]).save(buffer, format="PNG")
        buffer.seek(0)
        images.append((f"{dataset.name} #{index} (label {labels[index]})", buffer))
    return images
