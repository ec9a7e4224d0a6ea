"""Fixtures of the serve tests: tiny served models, test images, server processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.serve.serve_helpers import (
    ServerProcess,
    encode,
    free_port,
    save_tiny_model,
    serve_command,
)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding ``model/`` (multiclass, 3 classes, 64 px crops)."""
    root = tmp_path_factory.mktemp("serve") / "run"
    save_tiny_model(root / "model")
    return root


@pytest.fixture(scope="session")
def other_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second run folder with different weights (seed 1), for blue/green tests."""
    root = tmp_path_factory.mktemp("serve2") / "run"
    save_tiny_model(root / "model", seed=1)
    return root


@pytest.fixture(scope="session")
def images() -> list[bytes]:
    """Four distinct encoded images: three PNGs of different sizes and a JPEG."""
    gradient = Image.linear_gradient("L").resize((80, 60)).convert("RGB")
    return [
        encode(Image.new("RGB", (40, 56), (200, 30, 30))),
        encode(gradient),
        encode(Image.new("RGB", (96, 64), (20, 160, 240))),
        encode(Image.new("RGB", (50, 50), (10, 220, 10)), "JPEG"),
    ]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """Starts ``python -m visionauto.serve`` processes; each is stopped after the test."""
    servers: list[ServerProcess] = []

    def start(*args: str, ready: bool = True) -> tuple[ServerProcess, str]:
        port = free_port()
        server = ServerProcess(
            serve_command(*args, "--host", "127.0.0.1", "--port", str(port)),
            tmp_path / f"server-{len(servers)}.log",
        )
        servers.append(server)
        base = f"http://127.0.0.1:{port}"
        server.wait_http(f"{base}/health/{'ready' if ready else 'live'}")
        return server, base

    yield start
    for server in servers:
        server.stop()
