"""Image URLs for Label Studio tasks: a manifest `path` -> the URL Label Studio loads the image from.

Label Studio's local-files scheme `/data/local-files/?d=<path relative to
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT>` (default), `<url_prefix>/<path>` when the images are served
over HTTP / from a bucket, or any callable `path -> url` (see docs/labels.md). A 10^5-item queue asks
for 10^5 URLs: the local-files builder also offers them column-wise (`url.many`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from kibble import KibbleError

LOCAL_FILES_ENV = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
LOCAL_FILES_PREFIX = "/data/local-files/?d="

ImageUrl = Callable[[str], str]


def image_url_builder(spec: Any = None, data_root: str | Path | None = None) -> ImageUrl:
    """Turn a manifest `path` into the URL Label Studio loads the image from.

    spec:
      - a callable `path -> url`: used as is;
      - a string: a URL prefix, `<prefix>/<path>` (paths relative to data_root);
      - a mapping `{scheme: local_files|url, document_root: ..., url_prefix: ..., data_root: ...}`;
      - None: local files, document root from $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, else data_root.
    Relative manifest paths are relative to `data_root` (the workspace's data root).
    """
    if callable(spec):
        return spec
    if isinstance(spec, str):
        spec = {"scheme": "url", "url_prefix": spec}
    spec = dict(spec or {})
    data_root = spec.get("data_root") or data_root
    scheme = spec.get("scheme") or ("url" if spec.get("url_prefix") else "local_files")
    if scheme == "url":
        prefix = spec.get("url_prefix")
        if not prefix:
            raise KibbleError("image_url: scheme `url` needs url_prefix (e.g. https://host/images); or use scheme local_files")
        return _url_prefix_builder(str(prefix), data_root)
    if scheme == "local_files":
        root = spec.get("document_root") or os.environ.get(LOCAL_FILES_ENV) or data_root
        return _local_files_builder(root, data_root)
    raise KibbleError(f"image_url: unknown scheme {scheme!r}; use local_files or url")


def _absolute(path: str, data_root: str | Path | None) -> str | None:
    """Plain string operations (no pathlib objects): a 10^5-item queue calls this per item."""
    if os.path.isabs(path):
        return os.path.normpath(path)
    return os.path.normpath(os.path.join(data_root, path)) if data_root is not None else None  # callers pass it absolute


def _local_files_builder(document_root: str | Path | None, data_root: str | Path | None) -> ImageUrl:
    doc_root = os.path.abspath(Path(document_root).expanduser()) if document_root else None
    data_root = os.path.abspath(data_root) if data_root is not None else None

    def url(path: str) -> str:
        full = _absolute(str(path), data_root)
        if full is None or doc_root is None:  # nothing to anchor on: take the path as relative to the root
            rel = str(path).lstrip("/")
        elif full.startswith(doc_root.rstrip(os.sep) + os.sep):  # the common case, without relpath's work
            rel = full[len(doc_root.rstrip(os.sep)) + 1:]
        else:
            rel = os.path.relpath(full, doc_root)
            if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
                raise KibbleError(
                    f"image {full} is not under the Label Studio document root {doc_root}; set "
                    f"{LOCAL_FILES_ENV} (and image_url.document_root) to a folder that contains the images"
                )
        return LOCAL_FILES_PREFIX + quote(rel.replace(os.sep, "/"), safe="/")

    # the common case column-wise: relative paths of plain segments under a data root that is under the document
    # root need no normalising and no quoting, only a prefix (a 10^5-item queue: 1.5 s of per-path calls before)
    under = None
    if doc_root is not None and data_root is not None and os.sep == "/":
        if data_root == doc_root:
            under = ""
        elif data_root.startswith(doc_root.rstrip("/") + "/"):
            under = data_root[len(doc_root.rstrip("/")) + 1:] + "/"
    if under is not None and _PLAIN_PATH.fullmatch(under.rstrip("/") or "x"):
        url.many = lambda paths: _prefixed(paths, LOCAL_FILES_PREFIX + under, url)  # type: ignore[attr-defined]
    return url


# segments of letters, digits, `_`, `-`, `~` and inner dots (no `.`/`..` segment, no empty one): what
# os.path.normpath leaves alone and urllib's quote(safe="/") does not change
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9_.~-]*(/[A-Za-z0-9_~-][A-Za-z0-9_.~-]*)*")


def _prefixed(paths: pd.Series, prefix: str, one: ImageUrl) -> np.ndarray:
    """`prefix + path` where a path is plain (checked column-wise in Arrow), `one(path)` for the rest."""
    text = pd.Series(paths, dtype="string[pyarrow]").reset_index(drop=True)
    plain = text.str.fullmatch(_PLAIN_PATH.pattern).fillna(False).to_numpy(dtype=bool)
    out = (prefix + text).to_numpy(dtype=object)
    for i in np.flatnonzero(~plain):
        out[i] = one(str(text.iloc[i]))
    return out


def _url_prefix_builder(prefix: str, data_root: str | Path | None) -> ImageUrl:
    prefix = prefix.rstrip("/")
    base = os.path.abspath(data_root) if data_root is not None else None

    def url(path: str) -> str:
        p = Path(str(path))
        if p.is_absolute():
            rel = os.path.relpath(os.path.abspath(p), base) if base else None
            if rel is None or rel.startswith(".."):
                raise KibbleError(f"image {p} is outside the data root; a URL prefix needs paths relative to it")
            p = Path(rel)
        return f"{prefix}/{quote(p.as_posix(), safe='/')}"

    return url
