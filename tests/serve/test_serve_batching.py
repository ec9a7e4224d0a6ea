"""Micro-batching: grouping, routing of results, settings groups, errors, no wait when alone."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests.serve.serve_helpers import ThreadServer, azure_body, wait_until
from visionauto.errors import ConfigError
from visionauto.serve.app import create_app
from visionauto.serve.batching import MicroBatcher
from visionauto.serve.deployments import DeploymentSet, DeploymentSpec


class FakePredictor:
    """Records each forward call; the result of image ``x`` is ``{"value": x, "crop": ...}``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[list, dict | None]] = []
        self.delay_s = delay_s
        self.settings = {
            "task": "classification",
            "model_name": "fake",
            "class_names": ["a", "b"],
            "valid_resize_size": 72,
            "valid_crop_size": 64,
        }
        self._lock = threading.Lock()

    def predict(self, images, *, overrides=None, batch_size=None):  # noqa: ANN001, ANN201
        with self._lock:
            self.calls.append((list(images), overrides))
        time.sleep(self.delay_s)
        if any(image == "boom" for image in images):
            raise ConfigError("boom is not an image")
        crop = (overrides or {}).get("valid_crop_size", 64)
        # Over HTTP the images arrive decoded (PIL): answer their size.
        return [
            {"value": image if isinstance(image, str) else list(image.size), "crop": crop}
            for image in images
        ]


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


async def _submit_all(batcher: MicroBatcher, requests: list[list], overrides=None) -> list:  # noqa: ANN001
    batcher.start()
    try:
        return await asyncio.gather(
            *(
                batcher.submit(images, (overrides or [None] * len(requests))[i])
                for i, images in enumerate(requests)
            ),
            return_exceptions=True,
        )
    finally:
        await batcher.stop()


def test_concurrent_requests_share_one_forward_pass_and_get_their_own_results() -> None:
    fake = FakePredictor()
    batcher = MicroBatcher(fake, max_batch_size=16, max_wait_ms=200)
    requests = [[f"r{i}-a", f"r{i}-b"] for i in range(8)]
    results = run(_submit_all(batcher, requests))
    assert len(fake.calls) == 1
    assert len(fake.calls[0][0]) == 16
    assert results == [[{"value": x, "crop": 64} for x in images] for images in requests]
    assert batcher.stats.as_dict() == {
        "requests": 8,
        "images": 16,
        "forward_calls": 1,
        "max_images_per_call": 16,
    }


def test_max_batch_size_bounds_each_forward_pass() -> None:
    fake = FakePredictor()
    batcher = MicroBatcher(fake, max_batch_size=3, max_wait_ms=200)
    requests = [[f"r{i}"] for i in range(7)]
    results = run(_submit_all(batcher, requests))
    assert [len(images) for images, _ in fake.calls] == [3, 3, 1]
    assert [r[0]["value"] for r in results] == [f"r{i}" for i in range(7)]


def test_batch_size_one_turns_grouping_off() -> None:
    fake = FakePredictor()
    batcher = MicroBatcher(fake, max_batch_size=1, max_wait_ms=200)
    run(_submit_all(batcher, [["a"], ["b"], ["c"]]))
    assert [images for images, _ in fake.calls] == [["a"], ["b"], ["c"]]


def test_requests_with_different_settings_get_separate_forward_passes() -> None:
    fake = FakePredictor()
    batcher = MicroBatcher(fake, max_batch_size=16, max_wait_ms=200)
    overrides = [{"valid_crop_size": 32}, None, {"valid_crop_size": 32}, None]
    results = run(_submit_all(batcher, [["a"], ["b"], ["c"], ["d"]], overrides))
    assert sorted((tuple(images), str(o)) for images, o in fake.calls) == [
        (("a", "c"), "{'valid_crop_size': 32}"),
        (("b", "d"), "None"),
    ]
    assert [r[0]["crop"] for r in results] == [32, 64, 32, 64]


def test_a_failing_group_fails_only_its_requests_and_the_batcher_goes_on() -> None:
    fake = FakePredictor()
    batcher = MicroBatcher(fake, max_batch_size=16, max_wait_ms=50)

    async def scenario() -> tuple:
        batcher.start()
        try:
            first = await asyncio.gather(
                batcher.submit(["boom"], {"valid_crop_size": 32}),
                batcher.submit(["fine"]),
                return_exceptions=True,
            )
            later = await batcher.submit(["later"])
            return first, later
        finally:
            await batcher.stop()

    (failed, fine), later = run(scenario())
    assert isinstance(failed, ConfigError)
    assert fine == [{"value": "fine", "crop": 64}]
    assert later == [{"value": "later", "crop": 64}]


def test_a_lone_request_does_not_wait_for_company() -> None:
    batcher = MicroBatcher(FakePredictor(), max_batch_size=16, max_wait_ms=5000)
    start = time.perf_counter()
    run(_submit_all(batcher, [["alone"]]))
    assert time.perf_counter() - start < 1.0


def test_an_announced_request_is_waited_for() -> None:
    fake = FakePredictor()
    batcher = MicroBatcher(fake, max_batch_size=16, max_wait_ms=2000)

    async def scenario() -> None:
        batcher.start()
        ticket = batcher.announce()  # e.g. still decoding its images

        async def late() -> list:
            await asyncio.sleep(0.1)
            return await batcher.submit(["late"], ticket=ticket)

        try:
            await asyncio.gather(batcher.submit(["early"]), late())
        finally:
            await batcher.stop()

    run(scenario())
    assert [images for images, _ in fake.calls] == [["early", "late"]]
    assert not batcher._incoming


def test_http_requests_are_grouped_into_fewer_forward_passes(images: list[bytes]) -> None:
    fake = FakePredictor(delay_s=0.05)  # a forward pass that takes time, like a real model
    deployments = DeploymentSet(
        [DeploymentSpec("default", "fake")],
        {"default": 100},
        loader=lambda spec: fake,
        max_batch_size=32,
        max_wait_ms=100,
    )
    app = create_app(deployments)
    with ThreadServer(app) as server:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            wait_until(lambda: client.get("/health/ready").status_code == 200, 30, "ready")
            barrier = threading.Barrier(12)
            answers: dict[int, httpx.Response] = {}

            def call(i: int) -> None:
                barrier.wait()
                answers[i] = httpx.post(
                    f"{server.base}/score", json=azure_body([images[i % 4]]), timeout=30
                )

            threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    assert all(answers[i].status_code == 200 for i in range(12))
    assert sum(len(batch) for batch, _ in fake.calls) == 12
    assert len(fake.calls) < 12, "no two concurrent requests shared a forward pass"
    assert max(len(batch) for batch, _ in fake.calls) >= 2


@pytest.mark.parametrize(("size", "wait"), [(0, 5), (4, -1)])
def test_bad_limits_are_refused(size: int, wait: float) -> None:
    with pytest.raises(ValueError, match="bad batching limits"):
        MicroBatcher(FakePredictor(), max_batch_size=size, max_wait_ms=wait)
