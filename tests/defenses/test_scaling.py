"""One input-scaling rule everywhere: a PNG and a JPEG (quality 100) of the same real crop get the same
class through `classify`, the GoodNet and the exported eval.py."""

import subprocess
import sys

import pytest
from PIL import Image

from defenses.data import load_image
from defenses.goodnet import GoodNet, export_bundle
from defenses.models import load_model
from tests.defenses.cli import run_cli

pytestmark = pytest.mark.slow


def test_png_and_jpeg_of_one_crop_get_one_class_everywhere(csaw_fixtures, tmp_path):
    models = csaw_fixtures / "models"
    pngs = sorted((csaw_fixtures / "images").glob("*.png"))
    jpegs = []
    for png in pngs:
        jpeg = tmp_path / f"{png.stem}.jpg"
        Image.open(png).convert("RGB").save(jpeg, "JPEG", quality=100, subsampling=0)
        jpegs.append(jpeg)

    def classify(*extra):
        args = ["--model", models / "sunglasses_bd_weights.h5", "--arch", "deepid-csaw", *extra, *pngs, *jpegs]
        done = run_cli("classify", *args)
        answers = [line.split("\t")[1] for line in done.stdout.splitlines()]
        return answers[: len(pngs)], answers[len(pngs) :]

    png_answers, jpeg_answers = classify()
    assert png_answers == jpeg_answers == ["264", "977", "43", "328", "196", "0", "0", "0"]
    png_good, jpeg_good = classify("--repaired", models / "keras2_full_model_repaired_sunglasses.h5")
    assert png_good == jpeg_good
    assert png_good[2:] == ["43", "328", "196", "1283", "1283", "1283"]

    bad, _ = load_model(models / "sunglasses_bd_weights.h5", "deepid-csaw")
    repaired, _ = load_model(models / "keras2_full_model_repaired_sunglasses.h5")
    bundle = export_bundle(GoodNet(bad, repaired, 255.0), tmp_path / "bundle")
    images = [str(image) for pair in zip(pngs[2:], jpegs[2:], strict=True) for image in pair]
    printed = subprocess.run(  # one child for all twelve: eval.py's many-images form
        [sys.executable, "eval.py", *images], cwd=bundle, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    expected = [answer for answer in png_good[2:] for _ in ("png", "jpeg")]
    assert printed == [f"{image}\t{answer}" for image, answer in zip(images, expected, strict=True)]
    assert load_image(jpegs[0]).pixels.max() > 1.0  # JPEGs are 0..255 too, never 0..1
