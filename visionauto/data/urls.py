"""Resolve the ``image_url`` of a JSONL record and read the bytes behind it.

Forms accepted (spec §3.1): a path relative to the JSONL file's folder, an absolute path,
``file://`` URLs, ``azureml://.../datastores/<ds>/paths/<p>`` (mapped onto the local folder
``data.datastore_root``), and ``http(s)://`` (or any other fsspec protocol), kept as URLs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from visionauto.errors import DataError

_AZUREML = re.compile(r"^azureml://(?:.*/)?datastores/(?P<ds>[^/]+)/paths/(?P<path>.+)$")
_SCHEME = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]+)://")


class MissingDatastoreRootError(DataError):
    """An ``azureml://`` URL was met but ``data.datastore_root`` is not set (a config problem)."""


def url_scheme(ref: str) -> str | None:
    """The lower-case scheme of ``ref`` (``"http"``, ``"azureml"``...), or None for a plain path."""
    match = _SCHEME.match(ref)
    return match.group("scheme").lower() if match else None


def is_remote(ref: str) -> bool:
    """True when ``ref`` is a URL read through fsspec rather than a local path."""
    return url_scheme(ref) not in (None, "file")


def _known_remote_scheme(scheme: str) -> bool:
    from fsspec.registry import known_implementations

    return scheme in known_implementations


def resolve_image_url(url: str, *, base_dir: Path, datastore_root: str | None) -> str:
    """Turn an ``image_url`` into an absolute local path or a URL.

    Args:
        url: the value of ``image_url`` as written in the JSONL file.
        base_dir: folder of the JSONL file; relative paths are relative to it.
        datastore_root: local folder standing for the Azure datastore of ``azureml://`` URLs.

    Returns:
        An absolute, normalised local path, or the URL unchanged for remote protocols.

    Raises:
        MissingDatastoreRootError: an ``azureml://`` URL without ``datastore_root``.
        DataError: an empty URL, an ``azureml://`` URL without ``/paths/``, or an unknown scheme.
    """
    if not isinstance(url, str) or not url.strip():
        raise DataError(f"image_url {url!r} is empty: give a path or URL of the image file.")
    url = url.strip()
    scheme = url_scheme(url)
    if scheme is None:
        path = os.path.expanduser(url)
        return os.path.normpath(os.path.join(os.path.abspath(base_dir), path))
    if scheme == "file":
        parsed = urlparse(url)
        # file://host/share/x is a UNC path on Windows; on POSIX the host part must be empty.
        netloc = f"//{parsed.netloc}" if parsed.netloc not in ("", "localhost") else ""
        return os.path.normpath(os.path.abspath(url2pathname(netloc + parsed.path)))
    if scheme == "azureml":
        return _resolve_azureml(url, datastore_root)
    if scheme in ("http", "https") or _known_remote_scheme(scheme):
        return url
    raise DataError(
        f"image_url {url!r} has the unsupported scheme {scheme}://: use a local path, file://, "
        "azureml://.../paths/<path> (with data.datastore_root), or http(s)://."
    )


def _resolve_azureml(url: str, datastore_root: str | None) -> str:
    match = _AZUREML.match(url)
    if match is None:
        raise DataError(
            f"image_url {url!r} is an azureml:// URL without '/datastores/<name>/paths/<path>': "
            "write the full datastore URI, or a local path."
        )
    if datastore_root is None:
        raise MissingDatastoreRootError(
            f"image_url {url!r} points into the Azure datastore {match.group('ds')!r}, but "
            "data.datastore_root is not set: download the datastore to a local folder and rerun "
            "with data.datastore_root=<that folder> (paths after '/paths/' are looked up there)."
        )
    relative = unquote(match.group("path")).lstrip("/")
    root = os.path.abspath(os.path.expanduser(datastore_root))
    return os.path.normpath(os.path.join(root, relative))


def read_image_bytes(ref: str) -> bytes:
    """Read the raw bytes of a local file or a URL (through fsspec).

    Raises:
        DataError: the file is missing or the URL cannot be fetched; the message names ``ref``.
    """
    try:
        if not is_remote(ref):
            path = resolve_image_url(ref, base_dir=Path.cwd(), datastore_root=None)
            with open(path, "rb") as handle:
                return handle.read()
        import fsspec

        fs, path = fsspec.core.url_to_fs(ref)
        return fs.cat_file(path)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image {ref} does not exist: fix the image_url or add the file.") from None
    except Exception as err:  # any fetch failure (HTTP, auth, OS) is user-fixable
        raise DataError(f"cannot read image {ref}: {type(err).__name__}: {err}") from None
