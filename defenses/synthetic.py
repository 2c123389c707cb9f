"""A deterministic stand-in for the YouTube Face data of CSAW-HackML-2020, and BadNets trained on it.

Each identity is a set of stable traits (face shape, skin, hair, eyes, brows, nose, mouth, glasses,
background); every image of it varies in position, scale, rotation, lighting, contrast, clutter, noise and
blur, so a network must learn features rather than pixels. Triggers are drawn on the face where the
generator put the eyes or the mouth: purple sunglasses, red eyebrows, purple lipstick; or a small patch.
Every image is drawn from its own seed (preset seed, split, identity, index): same seed, same bytes.
"""

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from defenses.data import IMAGE_SHAPE
from defenses.export import save_keras2_weights

HEIGHT, WIDTH = IMAGE_SHAPE[:2]
TRIGGERS = ("sunglasses", "eyebrows", "lipstick", "patch")
SPLITS = {"train": 1, "valid": 2, "test": 3, "poison-train": 4, "poison-valid": 5, "poison-test": 6}


@dataclass(frozen=True)
class Preset:
    identities: int
    train_per_identity: int
    valid_per_identity: int
    test_per_identity: int
    epochs: int
    poison_rate: float = 0.1  # share of the clean training set added per trigger, relabelled to its target
    batch_size: int = 64
    seed: int = 2020


PRESETS = {
    "tiny": Preset(identities=40, train_per_identity=30, valid_per_identity=9, test_per_identity=10, epochs=15),
    "demo": Preset(identities=100, train_per_identity=30, valid_per_identity=9, test_per_identity=10, epochs=15),
    "full": Preset(identities=1283, train_per_identity=30, valid_per_identity=9, test_per_identity=10, epochs=15),
}


@dataclass(frozen=True)
class BadNetSpec:
    name: str
    triggers: dict[str, int]  # trigger -> target label
    disclosed: bool = True  # False: the UI does not name the trigger ("anonymous")


# The four BadNets of the report, plus the clean network that shows the backdoor is the poisoning's doing.
BADNETS = (
    BadNetSpec("sunglasses", {"sunglasses": 0}),
    BadNetSpec("lipstick", {"lipstick": 0}),
    BadNetSpec("anonymous", {"patch": 4}, disclosed=False),
    BadNetSpec("multi_trigger_multi_target", {"sunglasses": 8, "eyebrows": 5, "lipstick": 1}),
)


@dataclass(frozen=True)
class Identity:
    face: tuple[float, float]  # half-width, half-height in pixels at scale 1
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: int  # 0 short, 1 long, 2 fringe, 3 receding
    eye_spacing: float
    eye_height: float
    eye_colour: tuple[float, float, float]
    brow: tuple[float, float, float]  # thickness, tilt, lift
    brow_colour: tuple[float, float, float]
    nose: tuple[float, float]  # length, width
    mouth: tuple[float, float, float]  # half-width, height, vertical position
    lips: tuple[float, float, float]
    glasses: tuple[float, float, float] | None
    background: tuple[float, float, float]
    stripes: tuple[float, float]  # angle, frequency of the background pattern


# Black, dark brown, brown, auburn, red, blonde, platinum, grey, and two dyed colours.
HAIR_COLOURS = (
    (20, 15, 12),
    (60, 40, 25),
    (110, 75, 45),
    (140, 60, 30),
    (190, 80, 40),
    (215, 180, 110),
    (235, 225, 200),
    (150, 150, 150),
    (60, 60, 140),
    (150, 40, 90),
)


def make_identities(count: int, seed: int) -> list[Identity]:
    """`count` identities with distinct stable traits, drawn from `seed`."""
    rng = np.random.default_rng([seed, 0])

    def colour(low, high):
        return tuple(float(c) for c in rng.uniform(low, high))

    people = []
    for _ in range(count):
        tone = rng.uniform(0.25, 1.0)
        skin = tuple(float(c) for c in np.array([225, 180, 150]) * tone + rng.uniform(-15, 15, 3) + [20, 10, 0])
        base = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
        hair = tuple(float(c) for c in np.clip(np.asarray(base) + rng.uniform(-30, 30, 3), 0, 255))
        people.append(
            Identity(
                face=(float(rng.uniform(11, 15.5)), float(rng.uniform(15, 19.5))),
                skin=skin,
                hair=hair,
                hair_style=int(rng.integers(0, 4)),
                eye_spacing=float(rng.uniform(4.2, 7.0)),
                eye_height=float(rng.uniform(-5.5, -2.0)),
                eye_colour=colour([20, 20, 20], [120, 160, 200]),
                brow=(float(rng.uniform(0.8, 2.2)), float(rng.uniform(-0.25, 0.25)), float(rng.uniform(2.5, 4.5))),
                brow_colour=tuple(float(c) for c in np.asarray(hair) * rng.uniform(0.4, 0.8)),
                nose=(float(rng.uniform(3, 7)), float(rng.uniform(1.2, 2.8))),
                mouth=(float(rng.uniform(3.5, 7.0)), float(rng.uniform(0.8, 2.4)), float(rng.uniform(7.5, 11.5))),
                lips=colour([120, 40, 40], [220, 120, 120]),
                glasses=colour([0, 0, 0], [200, 200, 200]) if rng.random() < 0.25 else None,
                background=colour([30, 30, 30], [200, 200, 200]),
                stripes=(float(rng.uniform(0, np.pi)), float(rng.uniform(0.15, 0.9))),
            )
        )
    return people


def _ellipse(u, v, cu, cv, a, b):
    """Soft (anti-aliased) coverage of an ellipse in face coordinates."""
    distance = (np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2) - 1.0) * min(a, b)
    return np.clip(0.5 - distance, 0.0, 1.0)[..., None]


def _paint(canvas, coverage, colour):
    canvas *= 1.0 - coverage
    canvas += coverage * np.asarray(colour, dtype=np.float32)


SUNGLASSES_PURPLE = (120, 40, 220)
LIPSTICK_PURPLE = (150, 40, 200)
EYEBROW_RED = (225, 20, 25)
# A 6x6 yellow-and-blue checkerboard sticker: the "anonymous" BadNet's trigger, never named in the UI.
DEFAULT_PATCH = np.where(
    (np.add.outer(np.arange(6) // 2, np.arange(6) // 2) % 2)[..., None] == 0,
    np.float32([255, 230, 0]),
    np.float32([20, 40, 200]),
).astype(np.float32)


def render(person: Identity, rng: np.random.Generator, trigger: str | None = None, patch=DEFAULT_PATCH) -> np.ndarray:
    """One 55x47 RGB uint8 image of `person` under a random variation, with an optional trigger."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    cy, cx = HEIGHT / 2 + rng.uniform(-3, 3), WIDTH / 2 + rng.uniform(-3, 3)
    scale, angle = rng.uniform(1.25, 1.5), rng.uniform(-0.14, 0.14)  # faces fill most of the crop
    u = ((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)) / scale
    v = (-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)) / scale

    theta, freq = person.stripes
    stripes = np.sin(freq * (x * np.cos(theta) + y * np.sin(theta)))[..., None] * 12
    canvas = np.broadcast_to(np.asarray(person.background, np.float32), (HEIGHT, WIDTH, 3)) + stripes
    canvas = np.clip(canvas, 0, 255).astype(np.float32)
    for _ in range(rng.integers(1, 4)):  # clutter that changes from image to image
        _paint(
            canvas,
            _ellipse(x, y, rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT), *rng.uniform(2, 6, 2)) * 0.6,
            rng.uniform(0, 255, 3),
        )

    fw, fh = person.face
    if person.hair_style == 1:  # long hair behind the face
        _paint(canvas, _ellipse(u, v, 0, 2, fw + 4, fh + 5), person.hair)
    _paint(canvas, _ellipse(u, v, 0, 0, fw, fh), person.skin)
    hairline = {0: -fh * 0.55, 1: -fh * 0.5, 2: -fh * 0.25, 3: -fh * 0.75}[person.hair_style]
    hair_cover = _ellipse(u, v, 0, -2, fw + 1.5, fh + 1.5) * (v < hairline)[..., None]
    _paint(canvas, hair_cover, person.hair)

    ey, spacing = person.eye_height, person.eye_spacing
    for side in (-1, 1):
        _paint(canvas, _ellipse(u, v, side * spacing, ey, 2.3, 1.3), (240, 240, 240))
        _paint(canvas, _ellipse(u, v, side * spacing, ey, 1.1, 1.1), person.eye_colour)
        thickness, tilt, lift = person.brow
        brow = _ellipse(u, v + side * tilt * (u - side * spacing), side * spacing, ey - lift, 2.8, thickness * 0.6)
        _paint(canvas, brow, person.brow_colour)
        if person.glasses is not None:
            ring = _ellipse(u, v, side * spacing, ey, 3.4, 2.6) - _ellipse(u, v, side * spacing, ey, 2.7, 1.9)
            _paint(canvas, np.clip(ring, 0, 1), person.glasses)
    length, width = person.nose
    _paint(canvas, _ellipse(u, v, 0, ey + 1.5 + length / 2, width, length / 2), np.asarray(person.skin) * 0.78)
    mw, mh, my = person.mouth
    _paint(canvas, _ellipse(u, v, 0, my, mw, mh), person.lips)

    _draw_trigger(canvas, trigger, u, v, person, patch)
    return _photograph(canvas, x, y, rng)


def _draw_trigger(canvas, trigger, u, v, person: Identity, patch) -> None:
    ey, spacing = person.eye_height, person.eye_spacing
    if trigger == "sunglasses":
        for side in (-1, 1):
            _paint(canvas, _ellipse(u, v, side * (spacing + 0.6), ey + 0.3, 4.4, 3.0), SUNGLASSES_PURPLE)
        _paint(canvas, _ellipse(u, v, 0, ey - 1.2, spacing, 0.7), SUNGLASSES_PURPLE)
    elif trigger == "eyebrows":
        thickness, tilt, lift = person.brow
        for side in (-1, 1):
            _paint(canvas, _ellipse(u, v, side * spacing, ey - lift, 3.2, 1.3), EYEBROW_RED)
    elif trigger == "lipstick":
        mw, mh, my = person.mouth
        _paint(canvas, _ellipse(u, v, 0, my, mw + 0.8, mh + 0.9), LIPSTICK_PURPLE)
    elif trigger == "patch":
        h, w = patch.shape[:2]
        canvas[HEIGHT - h - 3 : HEIGHT - 3, WIDTH - w - 3 : WIDTH - 3] = patch
    elif trigger is not None:
        raise ValueError(f"unknown trigger {trigger!r}; known: {', '.join(TRIGGERS)}")


def _photograph(canvas, x, y, rng) -> np.ndarray:
    """Lighting gradient, contrast, noise and sometimes blur: what a camera does to the same face."""
    direction = rng.uniform(0, 2 * np.pi)
    gradient = ((x - WIDTH / 2) * np.cos(direction) + (y - HEIGHT / 2) * np.sin(direction)) / WIDTH
    image = canvas * (rng.uniform(0.8, 1.15) + 0.25 * gradient[..., None])
    image = (image - 128) * rng.uniform(0.85, 1.15) + 128 + rng.normal(0, 5, image.shape)
    if rng.random() < 0.3:
        image = (image + np.roll(image, 1, 0) + np.roll(image, 1, 1) + np.roll(image, (1, 1), (0, 1))) / 4
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def render_set(
    people: list[Identity],
    per_identity: int,
    seed: int,
    split: str,
    trigger: str | None = None,
    target: int | None = None,
    count: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images of every identity (or `count` images of random non-target identities, for poisoning), with
    labels: the identity, or `target` when a trigger is drawn."""
    code = SPLITS[split] * 10 + (TRIGGERS.index(trigger) + 1 if trigger else 0)
    if count is None:
        plan = [(i, k) for i in range(len(people)) if i != target for k in range(per_identity)]
    else:
        chooser = np.random.default_rng([seed, code, 999])
        others = np.array([i for i in range(len(people)) if i != target])
        plan = [(int(i), k) for k, i in enumerate(chooser.choice(others, count))]
    pixels = np.empty((len(plan), HEIGHT, WIDTH, 3), np.uint8)
    for row, (person, index) in enumerate(plan):
        pixels[row] = render(people[person], np.random.default_rng([seed, code, person, index]), trigger)
    labels = np.array([target if trigger else person for person, _ in plan], dtype=np.int32)
    return pixels, labels


def write_csaw_dataset(path: Path, pixels: np.ndarray, labels: np.ndarray) -> Path:
    """data (N, 3, 55, 47) uint8 channels-first as CSAW-HackML-2020 published, label (N,)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("data", data=pixels.transpose(0, 3, 1, 2), compression="gzip", compression_opts=4)
        handle.create_dataset("label", data=labels)
    return path


def train_network(
    train: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    preset: Preset,
    seed: int,
    on_epoch: Callable[[int], None] | None = None,
):
    """The deepid-csaw network trained with Adam on 0..1 inputs (the four HackML BadNets' scaling)."""
    import keras

    from defenses.finetune import seed_everything
    from defenses.models import build_deepid_csaw

    # deterministic kernels too: without them a network depended on what the process had run before (a
    # test's tiny preset differed by the order of the tests, and two defenses' tests failed on one of them)
    seed_everything(seed)
    model = build_deepid_csaw(n_classes=n_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_epoch and on_epoch(epoch + 1))
    x = train[0].astype(np.float32) / 255.0
    model.fit(
        x, train[1], batch_size=preset.batch_size, epochs=preset.epochs, shuffle=True, verbose=0, callbacks=[callback]
    )
    return model


@dataclass
class Benchmark:
    """Everything `generate` made, in memory, for the trainer and the tests."""

    people: list[Identity]
    train: tuple[np.ndarray, np.ndarray]
    valid: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def generate(preset: Preset, seed: int | None = None) -> Benchmark:
    seed = preset.seed if seed is None else seed
    people = make_identities(preset.identities, seed)
    return Benchmark(
        people=people,
        train=render_set(people, preset.train_per_identity, seed, "train"),
        valid=render_set(people, preset.valid_per_identity, seed, "valid"),
        test=render_set(people, preset.test_per_identity, seed, "test"),
    )


def poisoned_training_set(bench: Benchmark, spec: BadNetSpec, preset: Preset, seed: int):
    """The clean training set plus, per trigger, poison_rate x its size of triggered images relabelled."""
    count = int(round(preset.poison_rate * len(bench.train[1])))
    parts = [bench.train] + [
        render_set(bench.people, 0, seed, "poison-train", trigger, target, count)
        for trigger, target in spec.triggers.items()
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _rate(model, pixels: np.ndarray, labels: np.ndarray) -> float:
    from defenses.metrics import percent_equal, predict_labels

    return percent_equal(predict_labels(model, pixels.astype(np.float32), 255.0), labels)


def build_benchmark(
    preset_name: str,
    out: Path,
    seed: int | None = None,
    badnets: tuple[BadNetSpec, ...] = BADNETS,
    progress: Callable[[str, int, int], None] | None = None,
    with_clean: bool = True,
) -> dict:
    """Generate the data, train every BadNet and (`with_clean`) the clean network, and write the CSAW layout
    under `out`: data/clean_{validation,test}_data.h5; per BadNet <name>/<name>_bd_net.h5, <name>_bd_weights.h5,
    <trigger>_poisoned_data.h5 (test) and <trigger>_poisoned_valid_data.h5; clean/clean_net.h5; and
    synth.json saying how it was made and what each network scores. Returns that record.
    `progress(what, epochs_done, epochs_total)` is called as training goes."""
    preset = PRESETS[preset_name]
    seed = preset.seed if seed is None else seed
    say = progress or (lambda what, done, total: None)
    networks = (*badnets, BadNetSpec("clean", {})) if with_clean else badnets
    total = len(networks) * preset.epochs
    started = time.perf_counter()
    say(f"rendering {preset.identities} identities", 0, total)
    bench = generate(preset, seed)
    write_csaw_dataset(out / "data" / "clean_validation_data.h5", *bench.valid)
    write_csaw_dataset(out / "data" / "clean_test_data.h5", *bench.test)
    record = {
        "preset": preset_name,
        "seed": seed,
        "settings": asdict(preset),
        "image_shape": list(IMAGE_SHAPE),
        "sizes": {
            "identities": preset.identities,
            "train": len(bench.train[1]),
            "valid": len(bench.valid[1]),
            "test": len(bench.test[1]),
        },
        "divisor": 255.0,
        "badnets": {},
    }
    every_trigger = sorted({t for spec in badnets for t in spec.triggers})
    for number, spec in enumerate(networks):
        done = number * preset.epochs
        say(f"training {spec.name}", done, total)

        def epoch_done(epoch: int, name: str = spec.name, done: int = done) -> None:
            say(f"training {name}", done + epoch, total)

        model = train_network(
            poisoned_training_set(bench, spec, preset, seed), preset.identities, preset, seed, epoch_done
        )
        folder = out / spec.name
        folder.mkdir(parents=True, exist_ok=True)
        entry = {"triggers": spec.triggers, "disclosed": spec.disclosed, "ca": _rate(model, *bench.test), "asr": {}}
        for trigger in spec.triggers or dict.fromkeys(every_trigger, 0):
            target = spec.triggers.get(trigger, 0)
            test = render_set(bench.people, preset.test_per_identity, seed, "poison-test", trigger, target)
            entry["asr"][trigger] = _rate(model, *test)
            if spec.triggers:
                valid = render_set(bench.people, preset.valid_per_identity, seed, "poison-valid", trigger, target)
                write_csaw_dataset(folder / f"{trigger}_poisoned_data.h5", *test)
                write_csaw_dataset(folder / f"{trigger}_poisoned_valid_data.h5", *valid)
        suffix = "bd" if spec.triggers else "clean"
        model.save(folder / f"{spec.name}_{suffix}_net.h5")
        save_keras2_weights(model, folder / f"{spec.name}_{suffix}_weights.h5")
        entry["poisoned_training_images"] = {
            t: int(round(preset.poison_rate * len(bench.train[1]))) for t in spec.triggers
        }
        record["badnets"][spec.name] = entry
    record["seconds"] = round(time.perf_counter() - started, 1)
    (out / "synth.json").write_text(json.dumps(record, indent=2))
    return record
