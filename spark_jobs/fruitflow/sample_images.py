"""Generate fruit-like test images in the Fruits-360 layout: <output>/<split>/<class>/<n>_100.jpg.

Each class has its own colour, shape and size, with seeded jitter in position, size,
rotation, shading and noise, so the images differ the way photos of one fruit do and the
classes separate in feature space. Used by the tests, the demo and the benchmark: nothing
needs downloading.

    python -m fruitflow.sample_images data/images --count 200
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 100


@dataclass(frozen=True)
class Fruit:
    name: str
    color: tuple[int, int, int]
    width: int  # diameter across, in pixels of the 100x100 image
    height: int
    stem: bool = True


FRUITS = (
    Fruit("Apple Braeburn", (170, 35, 40), 70, 66),
    Fruit("Avocado", (60, 85, 30), 56, 76),
    Fruit("Banana", (235, 205, 60), 88, 30, stem=False),
    Fruit("Blueberry", (50, 60, 120), 40, 40, stem=False),
    Fruit("Cherry Rainier", (225, 150, 80), 46, 46),
    Fruit("Kiwi", (125, 95, 60), 64, 52, stem=False),
    Fruit("Lemon", (245, 225, 70), 68, 54),
    Fruit("Orange", (245, 140, 30), 72, 72),
    Fruit("Pear", (165, 190, 70), 58, 80),
    Fruit("Strawberry", (205, 30, 50), 56, 64),
)


def _jitter(rng: random.Random, value: int, share: float) -> int:
    return max(1, round(value * (1 + rng.uniform(-share, share))))


def fruit_image(fruit: Fruit, rng: random.Random) -> Image.Image:
    """One 100x100 RGB picture of ``fruit`` on the white background Fruits-360 uses."""
    canvas = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    width, height = _jitter(rng, fruit.width, 0.12), _jitter(rng, fruit.height, 0.12)
    cx, cy = SIZE / 2 + rng.uniform(-6, 6), SIZE / 2 + rng.uniform(-6, 6)
    color = tuple(min(255, max(0, channel + rng.randint(-18, 18))) for channel in fruit.color)
    layer = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    ImageDraw.Draw(layer).ellipse(
        (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2), fill=(*color, 255)
    )
    lighting = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(lighting)
    draw.ellipse((cx - width / 6, cy - height / 8, cx + width, cy + height), fill=(0, 0, 0, 70))
    draw.ellipse((cx - width / 3, cy - height / 3, cx - width / 8, cy - height / 8), fill=(255, 255, 255, 120))
    outline = layer.getchannel("A")
    layer = Image.alpha_composite(layer, lighting.filter(ImageFilter.GaussianBlur(3)))
    layer.putalpha(outline)
    if fruit.stem:
        ImageDraw.Draw(layer).line(
            (cx, cy - height / 2 + 2, cx + rng.uniform(-4, 4), cy - height / 2 - 8), fill=(90, 60, 30, 255), width=3
        )
    layer = layer.rotate(rng.uniform(-35, 35), resample=Image.Resampling.BICUBIC, center=(cx, cy))
    canvas.paste(layer, (0, 0), layer)
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 4, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(np.asarray(canvas, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def generate_images(output: Path, count: int, seed: int = 0, split: str = "Training") -> list[Path]:
    """Write ``count`` JPEGs spread evenly over the classes; the same seed gives the same files."""
    rng = random.Random(seed)
    written = []
    for index in range(count):
        fruit = FRUITS[index % len(FRUITS)]
        folder = output / split / fruit.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index // len(FRUITS)}_100.jpg"
        fruit_image(fruit, rng).save(path, quality=90)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fruitflow.sample_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="folder to write <split>/<class>/<n>_100.jpg into")
    parser.add_argument("--count", type=int, default=200, help="number of images (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("--split", default="Training", help="top folder, as in Fruits-360 (default %(default)s)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    written = generate_images(args.output, args.count, args.seed, args.split)
    print(f"wrote {len(written)} images in {len(FRUITS)} classes under {args.output / args.split}")


if __name__ == "__main__":
    main()
