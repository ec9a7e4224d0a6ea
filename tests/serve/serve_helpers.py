"""Helpers of the serve tests: tiny models, request bodies, servers on 127.0.0.1 (process or thread)."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import torch
from PIL import Image

from visionauto.models.registry import create_model
from visionauto.packaging.pyfunc import save_model
from visionauto.packaging.settings import build_settings

CLASS_NAMES = ["can", "carton", "milk_bottle"]
INFERENCE = {"valid_resize_size": 72, "valid_crop_size": 64}
AUTH_KEY = "test-key-0123456789"
REPO = Path(__file__).resolve().parents[2]


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def azure_body(images: list[bytes], **extra: object) -> dict:
    return {"input_data": {"columns": ["image"], "data": [b64(i) for i in images]}, **extra}


def save_tiny_model(model_dir: Path, task: str = "classification", seed: int = 0) -> Path:
    """A timm ``test_resnet`` (untrained, fixed seed) packaged as an MLflow model folder."""
    torch.manual_seed(seed)
    model = create_model(task, "test_resnet", num_classes=len(CLASS_NAMES), pretrained=False)
    settings = build_settings(
        task=task, model_name="test_resnet", class_names=CLASS_NAMES, inference=INFERENCE
    )
    return save_model(model_dir, state_dict=model.eval().state_dict(), settings=settings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout} s")


class ServerProcess:
    """``python -m <module> <args>`` in its own session; stopped by its pid (SIGTERM, then KILL)."""

    def __init__(self, args: list[str], log_path: Path, *, env: dict | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_http(self, url: str, timeout: float = 90.0) -> None:
        def ok() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            return httpx.get(url, timeout=2).status_code == 200

        wait_until(ok, timeout, f"200 from {url}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group: mlflow serve runs uvicorn below
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "visionauto.serve", *args]


class ThreadServer:
    """A uvicorn server for an app object, in a thread of this process (fake predictors)."""

    def __init__(self, app) -> None:  # noqa: ANN001
        import uvicorn

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_until(lambda: self.server.started, 30, "uvicorn start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def assert_probs(got: list[dict], want: list[dict], atol: float = 1e-6) -> None:
    """Same number of rows, same labels, probabilities equal within ``atol``."""
    import numpy as np

    assert [row["labels"] for row in got] == [row["labels"] for row in want]
    np.testing.assert_allclose(
        [row["probs"] for row in got], [row["probs"] for row in want], atol=atol, rtol=0
    )
