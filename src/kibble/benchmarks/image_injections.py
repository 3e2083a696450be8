"""Images with known data issues, made from real photos, for scripts/bench_data_issues.py.

Each kind is what a real collection holds and what kibble.data_issues, cleanlab's Datalab or CleanVision
should find:
- near_duplicate: a photo saved again with an everyday edit: resized to 60-90 %, cropped by up to 8 % a
  side, a little brighter or darker, re-encoded as JPEG at quality 50-85. Its original stays in the set,
  so both are the truth.
- outlier: not a dog photo, each of a different make so that they do not keep each other company in
  embedding space: a handwritten digit (scikit-learn's digits, 8 x 8 upscaled, tinted), a smooth random
  colour field, a grating, a checkerboard, a crop of scikit-learn's two sample photos (a temple, a
  flower), random polygons on paper, or coloured noise.
- blank: one flat colour at a random size, a fifth of them with faint sensor noise (std 1.5 grey levels).
- low_information: two flat colours, a rectangle or an ellipse on a background.
- odd_size: a photo squashed to a 4:1 or 1:4 strip, or shrunk to a 12-24 px thumbnail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

KINDS = ("near_duplicate", "outlier", "blank", "low_information", "odd_size")


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def near_copy(src: Path, dst: Path, rng: np.random.Generator) -> None:
    from PIL import Image, ImageEnhance

    with Image.open(src) as img:
        img = img.convert("RGB")
        w, h = img.size
        box = [int(rng.uniform(0, 0.08) * w), int(rng.uniform(0, 0.08) * h), w - int(rng.uniform(0, 0.08) * w), h - int(rng.uniform(0, 0.08) * h)]
        img = img.crop(box)
        scale = rng.uniform(0.6, 0.9)
        img = img.resize((max(8, int(img.width * scale)), max(8, int(img.height * scale))), Image.BILINEAR)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
        img.save(dst, "JPEG", quality=int(rng.integers(50, 86)))


OUTLIER_MAKES = ("digit", "field", "grating", "checkerboard", "sample_photo", "polygons", "noise")


def outlier_image(dst: Path, rng: np.random.Generator, make: str) -> None:
    from PIL import Image, ImageDraw
    from scipy.ndimage import gaussian_filter

    side = 224
    if make == "digit":  # a handwritten digit, tinted, at the photos' size
        from sklearn.datasets import load_digits

        digits = load_digits().images
        grey = (digits[rng.integers(len(digits))] / 16.0)[..., None]
        rgb = (grey * np.array(_colour(rng)) + (1 - grey) * np.array(_colour(rng))).astype(np.uint8)
        img = Image.fromarray(rgb).resize((side, side), Image.BILINEAR)
    elif make == "field":
        field = gaussian_filter(rng.normal(size=(side, side, 3)), sigma=(rng.uniform(4, 20), rng.uniform(4, 20), 0))
        img = Image.fromarray((255 * (field - field.min()) / max(np.ptp(field), 1e-9)).astype(np.uint8))
    elif make == "grating":
        y, x = np.mgrid[0:side, 0:side]
        angle, freq = rng.uniform(0, np.pi), rng.uniform(0.03, 0.3)
        wave = 0.5 + 0.5 * np.sin(freq * (x * np.cos(angle) + y * np.sin(angle)))[..., None]
        img = Image.fromarray((wave * np.array(_colour(rng)) + (1 - wave) * np.array(_colour(rng))).astype(np.uint8))
    elif make == "checkerboard":
        cell = int(rng.integers(8, 56))
        y, x = np.mgrid[0:side, 0:side]
        mask = (((x // cell) + (y // cell)) % 2)[..., None]
        img = Image.fromarray((mask * np.array(_colour(rng)) + (1 - mask) * np.array(_colour(rng))).astype(np.uint8))
    elif make == "sample_photo":  # a crop of a real non-dog photo
        from sklearn.datasets import load_sample_images

        photo = load_sample_images().images[int(rng.integers(2))]
        h, w = photo.shape[:2]
        size = int(rng.integers(120, min(h, w)))
        top, left = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
        img = Image.fromarray(photo[top:top + size, left:left + size]).resize((side, side), Image.BILINEAR)
    elif make == "polygons":
        img = Image.new("RGB", (side, side), (245, 245, 240))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(3, 9))):
            draw.polygon([tuple(int(v) for v in rng.integers(0, side, 2)) for _ in range(int(rng.integers(3, 6)))], fill=_colour(rng))
    elif make == "noise":
        img = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    else:
        raise ValueError(f"unknown outlier make {make!r}; use one of {OUTLIER_MAKES}")
    img.save(dst, "JPEG", quality=90)


def blank_image(dst: Path, rng: np.random.Generator, noisy: bool) -> None:
    from PIL import Image

    w, h = (int(v) for v in rng.integers(150, 500, 2))
    pixels = np.broadcast_to(np.array(_colour(rng), dtype=np.float64), (h, w, 3))
    if noisy:
        pixels = pixels + rng.normal(0, 1.5, (h, w, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(dst, "PNG")


def two_tone_image(dst: Path, rng: np.random.Generator) -> None:
    from PIL import Image, ImageDraw

    w, h = (int(v) for v in rng.integers(180, 400, 2))
    img = Image.new("RGB", (w, h), _colour(rng))
    x0, y0 = int(rng.uniform(0, 0.4) * w), int(rng.uniform(0, 0.4) * h)
    box = [x0, y0, x0 + int(rng.uniform(0.3, 0.6) * w), y0 + int(rng.uniform(0.3, 0.6) * h)]
    draw = ImageDraw.Draw(img)
    (draw.ellipse if rng.uniform() < 0.5 else draw.rectangle)(box, fill=_colour(rng))
    img.save(dst, "PNG")


def odd_size_copy(src: Path, dst: Path, rng: np.random.Generator) -> None:
    from PIL import Image

    with Image.open(src) as img:
        img = img.convert("RGB")
        shape = rng.integers(3)
        if shape == 0:
            size = (448, 112)
        elif shape == 1:
            size = (112, 448)
        else:
            side = int(rng.integers(12, 25))
            size = (side, side)
        img.resize(size, Image.BILINEAR).save(dst, "JPEG", quality=90)


def inject(originals: list[Path], out_dir: Path, counts: dict[str, int], seed: int) -> pd.DataFrame:
    """Write the injected images under `out_dir` (made from `originals`, drawn without replacement):
    a frame with path (absolute), kind and source (the original a near-duplicate copies, else None)."""
    unknown = set(counts) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; use {list(KINDS)}")
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    need = counts.get("near_duplicate", 0) + counts.get("odd_size", 0)
    if need > len(originals):
        raise ValueError(f"{need} originals needed, {len(originals)} given")
    sources = [originals[i] for i in rng.choice(len(originals), need, replace=False)]
    rows = []
    for kind in KINDS:
        for i in range(counts.get(kind, 0)):
            suffix = ".png" if kind in ("blank", "low_information") else ".jpg"
            dst = out_dir / f"{kind}_{i:03d}{suffix}"
            source = None
            if kind == "near_duplicate":
                source = sources.pop()
                near_copy(source, dst, rng)
            elif kind == "odd_size":
                odd_size_copy(sources.pop(), dst, rng)
            elif kind == "outlier":
                outlier_image(dst, rng, OUTLIER_MAKES[i % len(OUTLIER_MAKES)])
            elif kind == "blank":
                blank_image(dst, rng, noisy=i % 5 == 4)
            else:
                two_tone_image(dst, rng)
            rows.append({"path": str(dst.resolve()), "kind": kind, "source": None if source is None else str(Path(source).resolve())})
    return pd.DataFrame(rows, columns=["path", "kind", "source"])
