"""Reading images, and finding the unreadable ones before a long job trips over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kibble import KibbleError

BAD_IMAGE_POLICIES = ("fail", "skip")


def read_rgb(path: str | Path) -> np.ndarray:
    """Load an image as an HxWx3 uint8 array; a clear error names the file otherwise."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise KibbleError(f"{path}: image file is missing; fix the manifest path or use on_bad_image=skip") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise KibbleError(f"{path}: image cannot be decoded ({err}); replace it or use on_bad_image=skip") from None


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
