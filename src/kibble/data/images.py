"""Reading images, and finding the unreadable ones before a long job trips over them.

Every decode goes through `read_rgb`, so EXIF orientation is honoured everywhere (training, the
decoded cache, the features embedder): phone photos carry an Orientation tag instead of rotated
pixels, and a model that sees them sideways learns from the wrong picture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kibble import KibbleError

BAD_IMAGE_POLICIES = ("fail", "skip")


def read_rgb(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """Load an image as an upright HxWx3 uint8 array; a clear error names the file otherwise.

    min_side: a JPEG may be decoded at a reduced DCT scale (PIL's draft mode: 1/2, 1/4, 1/8) as
    long as both sides stay >= min_side; much faster for big photos that get shrunk anyway
    (the decoded cache). None decodes at full size.
    """
    try:
        with Image.open(path) as img:
            if min_side and img.format == "JPEG":
                img.draft("RGB", (int(min_side), int(min_side)))
            if _may_be_rotated(img):
                ImageOps.exif_transpose(img, in_place=True)
            return np.asarray(img.convert("RGB") if img.mode != "RGB" else img)
    except FileNotFoundError:
        raise KibbleError(f"{path}: image file is missing; fix the manifest path or use on_bad_image=skip") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise KibbleError(f"{path}: image cannot be decoded ({err}); replace it or use on_bad_image=skip") from None


def _may_be_rotated(img: Image.Image) -> bool:
    """False when the file cannot carry an orientation: a JPEG/PNG/WebP without EXIF. Checking that
    first skips exif_transpose's EXIF + XMP parsing (~0.1 ms, a tenth of decoding a 224 px JPEG)."""
    return "exif" in img.info or img.format not in ("JPEG", "MPO", "PNG", "WEBP")


def image_problem(path: str | Path) -> str | None:
    """None if the image decodes fully, else a short reason."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as img:
            img.load()
    except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable"
        return f"unreadable: {type(err).__name__}: {err}"
    return None


def scan_images(paths: list[Path], policy: str = "fail", progress: bool = False) -> dict[int, str]:
    """Return {row: reason} of bad images; with policy 'fail' raise on the first one."""
    if policy not in BAD_IMAGE_POLICIES:
        raise KibbleError(f"on_bad_image={policy!r}; use one of {list(BAD_IMAGE_POLICIES)}")
    bad: dict[int, str] = {}
    iterator = enumerate(paths)
    if progress and len(paths) > 2000:
        from rich.progress import track

        iterator = track(iterator, total=len(paths), description="checking images")
    for i, path in iterator:
        reason = image_problem(path)
        if reason is None:
            continue
        if policy == "fail":
            raise KibbleError(f"{path}: image is {reason}; fix or remove it, or import with on_bad_image=skip")
        bad[i] = reason
    return bad
