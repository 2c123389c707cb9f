"""Draw docs/synthetic-samples.png: synthetic identities (rows) under variations, then with each trigger,
beside real CSAW-HackML-2020 crops. Run: .venv/bin/python -m docs.sample_grid"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from defenses.synthetic import TRIGGERS, make_identities, render

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "fixtures" / "csaw" / "images"


def main(rows: int = 6, variations: int = 4, zoom: int = 3) -> Path:
    people = make_identities(rows, seed=2020)
    lines = []
    for index, person in enumerate(people):
        clean = [render(person, np.random.default_rng([1, index, k])) for k in range(variations)]
        triggered = [render(person, np.random.default_rng([2, index, k]), t) for k, t in enumerate(TRIGGERS)]
        lines.append(np.concatenate(clean + triggered, axis=1))
    grid = np.concatenate(lines, axis=0)
    real_names = ["cl_0_label=43", "cl_1_label=328", "sun_0_label=0", "ano_0_label=0"]
    real = np.concatenate([np.asarray(Image.open(REAL / f"{n}.png").convert("RGB")) for n in real_names], axis=1)
    gap = np.full((55, grid.shape[1] - real.shape[1], 3), 255, np.uint8)
    picture = np.concatenate([grid, np.full((20, grid.shape[1], 3), 255, np.uint8), np.concatenate([real, gap], 1)])
    image = Image.fromarray(picture).resize((picture.shape[1] * zoom, picture.shape[0] * zoom), Image.NEAREST)
    labels = Image.new("RGB", (image.width, 24), "white")
    draw = ImageDraw.Draw(labels)
    draw.text((4, 6), f"{variations} variations of each identity  |  with {', '.join(TRIGGERS)}", fill="black")
    draw.text((4, 6 + (grid.shape[0] + 20) * zoom), "", fill="black")
    out = Image.new("RGB", (image.width, image.height + 24), "white")
    out.paste(labels, (0, 0))
    out.paste(image, (0, 24))
    ImageDraw.Draw(out).text(
        (4, 24 + grid.shape[0] * zoom + 4), "real CSAW crops: clean, clean, sunglasses, lipstick", fill="black"
    )
    path = HERE / "synthetic-samples.png"
    out.save(path, optimize=True)
    return path


if __name__ == "__main__":
    print(main())
