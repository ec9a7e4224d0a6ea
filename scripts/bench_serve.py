"""Endpoint benchmark: latency and throughput of ``python -m visionauto.serve`` (prints numbers).

Compares, on the same images (real fridge photos when ``../shared/data`` is there):

1. the Predictor called in-process, one image per call (the floor for batch-1 latency);
2. the endpoint with one client (batch 1): the HTTP + JSON + base64 overhead, target <= 10 %;
3. the endpoint under ``--concurrency`` clients with micro-batching on vs off (max batch 1):
   target: more images/s with batching on.

Loopback only, bounded (``--requests`` per measurement). The model is an untrained timm
``resnet18`` (pretrained=False) at 224 px, so the numbers reflect a real network's cost.
The measurements are interleaved in ``--rounds`` rounds (both servers stay up), so a burst of
load from other processes hits every configuration alike; the batch-1 overhead is the median of
the per-round ratios.

Usage: python scripts/bench_serve.py [--requests 200] [--rounds 4] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "odFridgeObjects_FairMOTformat" / "images"
CLASSES = ["can", "carton", "milk_bottle", "water_bottle"]


def make_model(root: Path, name: str, size: int) -> Path:
    import torch

    from visionauto.models.registry import create_model
    from visionauto.packaging.pyfunc import save_model
    from visionauto.packaging.settings import build_settings

    torch.manual_seed(0)
    model = create_model("classification", name, num_classes=len(CLASSES), pretrained=False)
    settings = build_settings(
        task="classification",
        model_name=name,
        class_names=CLASSES,
        inference={"valid_resize_size": round(size * 256 / 224), "valid_crop_size": size},
    )
    return save_model(root / "model", state_dict=model.eval().state_dict(), settings=settings)


def load_images(count: int) -> list[bytes]:
    if PHOTOS.is_dir():
        return [p.read_bytes() for p in sorted(PHOTOS.glob("*.jpg"))[:count]]
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def summarize(latencies: list[float], wall: float, images: int) -> dict[str, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": p99 * 1000,
        "images_per_s": images / wall,
    }


def load_in_process(model_dir: Path, images: list[bytes]):  # noqa: ANN201
    from visionauto.packaging.predictor import load_predictor

    predictor = load_predictor(model_dir, device="cpu")
    for image in images[:5]:
        predictor.predict([image])
    return predictor


def bench_in_process(predictor, images: list[bytes], requests: int) -> tuple[list[float], float]:  # noqa: ANN001
    latencies = []
    start = time.perf_counter()
    for i in range(requests):
        t0 = time.perf_counter()
        predictor.predict([images[i % len(images)]])
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "visionauto.serve",
        "--model",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]
    proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=REPO)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server not ready in 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def bench_endpoint(
    base: str, bodies: list[bytes], requests: int, concurrency: int
) -> tuple[list[float], float]:
    headers = {"Content-Type": "application/json"}
    clients = [httpx.Client(base_url=base, timeout=120) for _ in range(concurrency)]
    for client in clients:  # warm-up + one open connection per client
        client.post("/score", content=bodies[0], headers=headers).raise_for_status()

    def call(i: int) -> float:
        client = clients[i % concurrency]
        t0 = time.perf_counter()
        client.post("/score", content=bodies[i % len(bodies)], headers=headers).raise_for_status()
        return time.perf_counter() - t0

    start = time.perf_counter()
    if concurrency == 1:
        latencies = [call(i) for i in range(requests)]
    else:
        # Each worker thread keeps to one client: i % concurrency follows the worker's slot.
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = list(pool.map(call, range(requests)))
    wall = time.perf_counter() - start
    for client in clients:
        client.close()
    return latencies, wall


def labels_of(clients: int) -> dict[str, str]:
    return {
        "inproc": "in-process Predictor, 1 image/call",
        "on1": "endpoint batching on, 1 client",
        f"on{clients}": f"endpoint batching on, {clients} clients",
        "off1": "endpoint batching off, 1 client",
        f"off{clients}": f"endpoint batching off, {clients} clients",
    }


def run_rounds(
    predictor,
    servers: dict,
    images: list[bytes],
    bodies: list[bytes],
    args: argparse.Namespace,  # noqa: ANN001
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Every configuration once per round; returns the summaries and the per-round overheads."""
    per_round = max(1, args.requests // args.rounds)
    raw = {key: ([], [0.0]) for key in labels_of(args.concurrency)}
    ratios = []
    for _ in range(args.rounds):
        p50 = {}
        for key, (latencies, wall) in raw.items():
            if key == "inproc":
                measured, seconds = bench_in_process(predictor, images, per_round)
            else:
                mode = "on" if key.startswith("on") else "off"
                base = servers[mode][1]
                measured, seconds = bench_endpoint(base, bodies, per_round, int(key[len(mode) :]))
            latencies.extend(measured)
            wall[0] += seconds
            p50[key] = statistics.median(measured)
        ratios.append(p50["on1"] / p50["inproc"])
    rows = {key: summarize(lat, wall[0], len(lat)) for key, (lat, wall) in raw.items()}
    return rows, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per configuration")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--model", default="resnet18", help="timm or catalog model name")
    parser.add_argument("--size", type=int, default=224, help="valid_crop_size")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    c = args.concurrency
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        model_dir = make_model(work, args.model, args.size)
        images = load_images(32)
        bodies = [
            json.dumps({"input_data": {"columns": ["image"],
                                       "data": [base64.b64encode(i).decode("ascii")]}}).encode()
            for i in images
        ]  # fmt: skip
        predictor = load_in_process(model_dir, images)
        servers = {
            "on": start_server(model_dir, work / "on.log", "--max-batch-size", str(c),
                               "--max-wait-ms", "5"),
            "off": start_server(model_dir, work / "off.log", "--max-batch-size", "1",
                                "--max-wait-ms", "0"),
        }  # fmt: skip
        try:
            rows, ratios = run_rounds(predictor, servers, images, bodies, args)
        finally:
            for proc, _ in servers.values():
                stop_server(proc)
    print(
        f"\nmodel {args.model} at {args.size} px, {len(images)} distinct JPEGs, "
        f"{args.rounds} rounds, {args.requests} requests of 1 image per configuration, "
        f"{os.cpu_count()} CPU cores, loopback"
    )
    # Other processes on the machine distort every number: say how busy it was.
    print(f"1-min load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"{'':44s} {'p50 ms':>9s} {'p99 ms':>9s} {'images/s':>9s}")
    for key, label in labels_of(c).items():
        stats = rows[key]
        print(
            f"{label:44s} {stats['p50_ms']:9.1f} {stats['p99_ms']:9.1f} "
            f"{stats['images_per_s']:9.1f}"
        )
    overhead = 100 * (statistics.median(ratios) - 1)
    gain = rows[f"on{c}"]["images_per_s"] / rows[f"off{c}"]["images_per_s"]
    print(
        f"\nendpoint overhead at batch 1 (median of per-round p50 ratios): {overhead:+.1f} % "
        f"(target <= 10 %); per round: {', '.join(f'{100 * (r - 1):+.0f} %' for r in ratios)}"
    )
    print(f"micro-batching throughput gain at {c} clients: {gain:.2f}x (target > 1)")  # fmt: skip


if __name__ == "__main__":
    main()
