"""The exported bundle's eval.py (defenses/bundle_eval.py, with the library functions it uses copied in): a
readable image prints one class; a missing path, a text file or a truncated PNG is one line on stderr naming
the file and the reason, with exit code 2, and no traceback. Run in-process on a bundle's folder; the bundle's
own eval.py runs alone in a child process as a CSAW grader would (a smoke test, and the Keras 2 path)."""

import io
import subprocess
import sys

import pytest
from PIL import Image

from defenses.bundle_eval import main
from defenses.goodnet import GoodNet, eval_script_source, export_bundle
from tests.defenses.tiny import tiny_data, tiny_model

pytestmark = pytest.mark.slow  # builds two Keras models and starts Python children


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle")
    return export_bundle(GoodNet(tiny_model(seed=0), tiny_model(seed=1), 255.0), folder / "goodnet")


def evaluate(bundle, capsys, *arguments) -> subprocess.CompletedProcess:
    """eval.py's main on the bundle's folder, in this process, as the child's exit code and output."""
    capsys.readouterr()
    code = main([str(argument) for argument in arguments], bundle)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(arguments, code, out, err)


def test_the_bundles_eval_py_runs_alone_and_carries_no_import_of_prunelab(bundle, tmp_path):
    path = tmp_path / "face.png"
    Image.fromarray(tiny_data(1)[0][0].astype("uint8")).save(path)
    done = subprocess.run(
        [sys.executable, "-I", "eval.py", str(path)], cwd=bundle, capture_output=True, text=True, timeout=300
    )  # -I: isolated, this project is not on its path
    assert done.returncode == 0 and 0 <= int(done.stdout) <= 4  # TensorFlow logs on stderr; stdout is the class
    source = (bundle / "eval.py").read_text()
    assert source == eval_script_source() and "defenses" not in source and "LIBRARY" not in source


def test_many_images_or_a_folder_get_a_line_each_and_an_unreadable_one_does_not_stop_the_rest(bundle, tmp_path, capsys):
    pixels = tiny_data(3)[0].astype("uint8")
    for number, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / f"face{number}.png")
    (tmp_path / "notes.txt").write_text("not a picture\n")  # not an image file name: a folder skips it
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n")
    done = evaluate(bundle, capsys, tmp_path)
    lines = done.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(tmp_path / f"face{n}.png") for n in range(3)]
    assert all(0 <= int(line.split("\t")[1]) <= 4 for line in lines)
    assert done.returncode == 2 and "cut.png" in done.stderr and "Traceback" not in done.stderr
    one = evaluate(bundle, capsys, tmp_path / "face1.png")  # the grader's form is unchanged: the class alone
    assert one.stdout.strip() == lines[1].split("\t")[1]


def test_what_is_not_an_image_is_one_line_and_exit_code_2(bundle, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a picture\n")
    buffer = io.BytesIO()
    Image.fromarray(tiny_data(1)[0][0].astype("uint8")).save(buffer, "PNG")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(buffer.getvalue()[:60])
    cases = [
        (text, "notes.txt is not a PNG or JPEG image"),
        (truncated, "cut.png could not be"),
        (tmp_path / "missing.png", "no such file"),
        (tmp_path / "empty", "no PNG or JPEG images in this folder"),
    ]
    (tmp_path / "empty").mkdir()
    for path, reason in cases:
        done = evaluate(bundle, capsys, path)
        assert done.returncode == 2 and done.stdout == "", path
        assert done.stderr.startswith(f"eval.py: {path}: ") and reason in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def strip_bundle(tmp_path_factory):
    """A bundle whose two networks are the same tiny BadNet (so they never disagree) with STRIP: only STRIP
    can answer N, for an image carrying the BadNet's patch."""
    import keras

    from defenses.strip import fit_strip
    from tests.defenses.tiny import tiny_badnet_files

    folder = tmp_path_factory.mktemp("strip-bundle")
    bad = keras.models.load_model(tiny_badnet_files(folder / "bd")["model"])
    detector, _ = fit_strip(bad, tiny_data(300, seed=1)[0], 255.0, frr=5.0, n=40)
    return export_bundle(GoodNet(bad, bad, 255.0), folder / "goodnet", detector=detector), bad, detector


def test_a_strip_bundle_answers_n_for_a_triggered_image_as_the_library_does(strip_bundle, tmp_path, capsys):
    import numpy as np

    from defenses.goodnet import goodnet_labels
    from defenses.metrics import predict_probabilities
    from defenses.strip import entropies
    from tests.defenses.tiny import add_trigger

    bundle, bad, detector = strip_bundle
    clean = tiny_data(20, seed=7)[0].round()
    images = np.concatenate([clean, add_trigger(clean)])
    votes = predict_probabilities(bad, images, 255.0)
    expected = goodnet_labels(votes, votes, detector.poisoned(entropies(bad, images, 255.0, detector.overlays)))
    assert (expected[20:] == 4).all() and (expected[:20] < 4).sum() >= 18  # STRIP alone says N for the patch
    for number in (0, 1, 20, 21):
        path = tmp_path / f"image-{number}.png"
        Image.fromarray(images[number].astype("uint8")).save(path)
        done = evaluate(bundle, capsys, path)
        assert done.returncode == 0 and int(done.stdout) == expected[number], (number, done.stderr[-500:])


@pytest.fixture(scope="module")
def keras2_bundle(tmp_path_factory):
    """A GoodNet of the tiny BadNet (a patch makes it answer 0) and a network trained on clean data only: they
    agree on clean images and disagree on patched ones. The bundle keeps only its Keras 2 files, as a machine
    with Keras 2 and no Keras 3 would use it."""
    import shutil

    import keras

    from tests.defenses.tiny import tiny_badnet_files, trained_tiny_model

    folder = tmp_path_factory.mktemp("keras2-bundle")
    goodnet = GoodNet(keras.models.load_model(tiny_badnet_files(folder / "bd")["model"]), trained_tiny_model(), 255.0)
    bundle = export_bundle(goodnet, folder / "goodnet")
    alone = shutil.copytree(bundle, folder / "keras2-only")
    for path in alone.glob("*.keras"):
        path.unlink()
    return alone, goodnet


def test_without_the_keras_3_files_eval_py_answers_from_the_keras_2_ones_with_tf_keras(keras2_bundle, tmp_path):
    import json
    import os

    import numpy as np

    from tests.defenses.tiny import add_trigger

    bundle, goodnet = keras2_bundle
    assert json.loads((bundle / "bundle.json").read_text())["keras2"] == {
        "bad": "bad_net_keras2.h5",
        "repaired": "repaired_net_keras2.h5",
    }
    readme = (bundle / "README.txt").read_text()
    assert "GOODNET_KERAS=2" in readme and "bad_net_keras2.h5, repaired_net_keras2.h5" in readme
    clean = tiny_data(40, seed=7)[0].round()
    images = np.concatenate([clean, add_trigger(clean)])
    expected = goodnet.labels(images)
    chosen = [int(np.flatnonzero(expected[:40] < 4)[0]), 40 + int(np.flatnonzero(expected[40:] == 4)[0])]
    keras2 = os.environ | {"GOODNET_KERAS": "2"}  # the Keras 2 API even though Keras 3 is installed here
    for number in chosen:  # a clean image answered with its class, a patched one answered N
        path = tmp_path / f"image-{number}.png"
        Image.fromarray(images[number].astype("uint8")).save(path)
        done = subprocess.run(
            [sys.executable, "eval.py", str(path)], cwd=bundle, capture_output=True, text=True, timeout=300, env=keras2
        )
        assert done.returncode == 0 and int(done.stdout) == expected[number], (number, done.stderr[-800:])


def test_a_network_keras_2_cannot_express_leaves_a_keras_3_only_bundle_that_says_so(tmp_path, monkeypatch):
    import json

    bad = tiny_model(conv_activation="hard_sigmoid")  # Keras 2's hard_sigmoid is another function
    bundle = export_bundle(GoodNet(bad, bad, 255.0), tmp_path / "goodnet")
    assert sorted(p.name for p in bundle.iterdir()) == [
        "README.txt",
        "bad_net.keras",
        "bundle.json",
        "eval.py",
        "repaired_net.keras",
    ]
    meta = json.loads((bundle / "bundle.json").read_text())
    assert "keras2" not in meta and "activation 'hard_sigmoid'" in meta["keras2_refused"]
    assert "No Keras 2 files: layer 'conv_a' (Conv2D): activation 'hard_sigmoid'" in (bundle / "README.txt").read_text()
    image = tmp_path / "face.png"
    Image.fromarray(tiny_data(1)[0][0].astype("uint8")).save(image)
    monkeypatch.setenv("GOODNET_KERAS", "2")
    with pytest.raises(SystemExit) as refused:
        main([str(image)], bundle)
    assert "this bundle has no Keras 2 files" in str(refused.value.code)
