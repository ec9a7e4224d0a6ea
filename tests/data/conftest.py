"""Fixtures of the data tests: small synthetic data sets and a loopback HTTP server."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from visionauto.data.synthetic import make_messy_dataset, make_synthetic_dataset


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1: yields ``(folder, base_url)``."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def messy_jsonl(tmp_path: Path) -> Path:
    return make_messy_dataset(tmp_path / "messy")


@pytest.fixture
def cls_jsonl(tmp_path: Path) -> Path:
    """24 multiclass 48-px PNGs (8 per class)."""
    return make_synthetic_dataset(tmp_path / "cls", "classification", n_images=24, image_size=48)
