"""Reading images, and finding the unreadable ones before a long job trips over them.

Every decode goes through `read_rgb`, so EXIF orientation is honoured everywhere (training, the
decoded cache, the features embedder): phone photos carry an Orientation tag instead of rotated
pixels, and a model that sees them sideways learns from the wrong picture.

Images can go bad after import (deleted, truncated, replaced by something else). Every reader
follows one `on_bad_image` policy: `skip` checks the images up front (`scan_images`) and leaves the bad
ones out with a count; `fail` (the default, no up-front cost) stops at the first bad file with one
line naming it and the option. That line has to survive torch's DataLoader, which re-raises a
worker's exception with the whole worker traceback as its message: `BadImageError` keeps only ours.

Decompression bombs: PIL refuses images over `2 * Image.MAX_IMAGE_PIXELS` and only warns above
`MAX_IMAGE_PIXELS`. kibble makes it one limit, `max_image_pixels` (default: PIL's hard limit, so
nothing that opened before is refused now): any image with more pixels is a bad image, named in one
line with the knob that allows it (`set_max_image_pixels`; null = no limit).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kibble import KibbleError

BAD_IMAGE_POLICIES = ("fail", "skip")
# how far an up-front scan checks each image: decode it fully (the default) | read its header (size, format,
# the bomb limit; about 20x faster) | the file exists | nothing (10^6-image imports: readers with
# on_bad_image=skip meet bad files when they read them)
IMAGE_CHECKS = ("decode", "header", "exists", "none")
DEFAULT_MAX_PIXELS = 2 * 89_478_485  # PIL's own hard limit (2 x its default MAX_IMAGE_PIXELS)
_UNSET = object()
_max_pixels: int | None = DEFAULT_MAX_PIXELS
_scanned_ok: set[tuple[str, int, int, int | None]] = set()  # (path, size, mtime_ns, limit) that decoded fully


class BadImageError(KibbleError):
    """An image that cannot be read; the message is one line even after a DataLoader worker.

    torch re-raises a worker's exception as `type(err)(text)`, text being "Caught ... in DataLoader
    worker process N" plus the worker's traceback; that traceback ends with our own line, which is
    what this constructor keeps.
    """

    def __init__(self, message: object = ""):
        text = str(message)
        if "\n" in text:
            marker = f"{type(self).__module__}.{type(self).__qualname__}: "
            ours = [line[len(marker):] for line in text.splitlines() if line.startswith(marker)]
            text = ours[-1] if ours else " ".join(line.strip() for line in text.splitlines() if line.strip())
        super().__init__(text)


def set_max_image_pixels(value: int | str | None) -> int | None:
    """Set the largest image (width x height) every reader in this process decodes; None = no limit."""
    global _max_pixels
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        limit = None
    else:
        try:
            limit = int(value)
        except (TypeError, ValueError):
            limit = 0
        if limit < 1 or isinstance(value, float) and value != limit:
            raise KibbleError(f"max_image_pixels={value!r}; use a whole number of pixels (width x height) >= 1, or null for no limit")
    _max_pixels = limit
    return limit


def max_image_pixels() -> int | None:
    return _max_pixels


def _bomb_line(path: str | Path, err: Exception, limit: int | None, prefix: str) -> str:
    found = re.search(r"\((\d+) pixels\)", str(err))
    size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return (f"{path}: image has {size}, over {prefix}max_image_pixels={limit} (the decompression-bomb guard); "
            f"if you trust the file raise {prefix}max_image_pixels (null = no limit), or set {prefix}on_bad_image=skip")


def _open(path: str | Path, limit: int | None) -> Image.Image:
    """Image.open with `limit` as the one bomb limit: PIL's warning band becomes an error too."""
    Image.MAX_IMAGE_PIXELS = limit  # PIL reads its module global; ours decides what it holds
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def read_rgb(path: str | Path, min_side: int | None = None, *, max_pixels: object = _UNSET, prefix: str = "") -> np.ndarray:
    """Load an image as an upright HxWx3 uint8 array; a one-line BadImageError names the file otherwise.

    min_side: a JPEG may be decoded at a reduced DCT scale (PIL's draft mode: 1/2, 1/4, 1/8) as
    long as both sides stay >= min_side; much faster for big photos that get shrunk anyway
    (the decoded cache). None decodes at full size.
    max_pixels: the bomb limit (default: this process's, `set_max_image_pixels`); prefix: where the
    options live in the caller's config (`data.` for train/kfold), for the advice in the message.
    """
    limit = _max_pixels if max_pixels is _UNSET else max_pixels
    try:
        with _open(path, limit) as img:
            if min_side and img.format == "JPEG":
                img.draft("RGB", (int(min_side), int(min_side)))
            if _may_be_rotated(img):
                ImageOps.exif_transpose(img, in_place=True)
            return np.asarray(img.convert("RGB") if img.mode != "RGB" else img)
    except FileNotFoundError:
        raise BadImageError(f"{path}: image file is missing; fix the manifest path or set {prefix}on_bad_image=skip") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImageError(_bomb_line(path, err, limit, prefix)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise BadImageError(f"{path}: image cannot be decoded ({reason}); replace it or set {prefix}on_bad_image=skip") from None


def _may_be_rotated(img: Image.Image) -> bool:
    """False when the file cannot carry an orientation: a JPEG/PNG/WebP without EXIF. Checking that
    first skips exif_transpose's EXIF + XMP parsing (~0.1 ms, a tenth of decoding a 224 px JPEG)."""
    return "exif" in img.info or img.format not in ("JPEG", "MPO", "PNG", "WEBP")


def image_problem(path: str | Path, prefix: str = "", check: str = "decode") -> str | None:
    """None if the image passes `check` (decodes fully, by default), else a short reason (one line)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    if check == "exists":
        return None
    key = (str(path), st.st_size, st.st_mtime_ns, _max_pixels)
    if key in _scanned_ok:  # checked already in this process (the folds of a round share one scan)
        return None
    try:
        with _open(path, _max_pixels) as img:
            if check == "header":
                return None if img.size[0] > 0 and img.size[1] > 0 else "unreadable: empty image"
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return "too large: " + _bomb_line(path, err, _max_pixels, prefix).split(": image has ", 1)[1]
    except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable"
        return f"unreadable: {type(err).__name__}: {' '.join(str(err).split())}"
    _scanned_ok.add(key)
    return None


def scan_images(paths: list[Path], policy: str = "fail", progress: bool = False, prefix: str = "", check: str = "decode") -> dict[int, str]:
    """Return {row: reason} of bad images; with policy 'fail' raise on the first one. `check`: IMAGE_CHECKS."""
    if policy not in BAD_IMAGE_POLICIES:
        raise KibbleError(f"{prefix}on_bad_image={policy!r}; use one of {list(BAD_IMAGE_POLICIES)}")
    if check not in IMAGE_CHECKS:
        raise KibbleError(f"{prefix}check_images={check!r}; use one of {list(IMAGE_CHECKS)}")
    if check == "none":
        return {}
    bad: dict[int, str] = {}
    iterator = enumerate(paths)
    if progress and len(paths) > 2000:
        from rich.progress import track

        iterator = track(iterator, total=len(paths), description="checking images")
    for i, path in iterator:
        reason = image_problem(path, prefix, check)
        if reason is None:
            continue
        if policy == "fail":
            fix = "" if reason.startswith("too large") else f"; fix or remove it, or set {prefix}on_bad_image=skip"
            raise BadImageError(f"{path}: image is {reason}{fix}")
        bad[i] = reason
    return bad


def skipped_line(bad: dict[str, str], what: str = "images") -> str:
    """The warning for skipped images: how many, and the first one with its reason."""
    first, reason = next(iter(bad.items()))
    return f"skipping {len(bad)} unreadable {what} (on_bad_image=skip), e.g. {first}: {reason}"
