"""Micro-batching: concurrent requests to one deployment share one forward pass.

Requests are queued; a collector task takes the first one, then keeps adding queued requests
until the batch holds ``max_batch_size`` images or ``max_wait_ms`` has passed since the first.
It never waits when no other request is on its way (see :meth:`MicroBatcher.announce`), so a
lone request pays no batching delay. Requests with different per-request settings (e.g. another
crop size) cannot share a tensor: they go in the same round but in separate forward passes.
The forward pass runs in one worker thread per deployment, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


class PredictorLike(Protocol):
    """What the batcher needs: :class:`visionauto.packaging.predictor.Predictor` fits."""

    settings: dict[str, Any]

    def predict(
        self, images: Sequence[Any], *, overrides: dict | None = None, batch_size: int | None = None
    ) -> list[dict]: ...


@dataclass
class _Item:
    images: list[Any]
    overrides: dict[str, Any]
    future: asyncio.Future


@dataclass
class BatchStats:
    """Counters of one batcher (shown by ``GET /deployments``).

    Attributes:
        requests: requests answered (or failed) so far.
        images: images scored so far.
        forward_calls: calls of ``predictor.predict`` (one per batch and settings group).
        max_images_per_call: the largest number of images one call received.
    """

    requests: int = 0
    images: int = 0
    forward_calls: int = 0
    max_images_per_call: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Ticket:
    """A request announced to the batcher before its images are decoded (see ``announce``)."""

    batcher: MicroBatcher
    open: bool = field(default=True)

    def close(self) -> None:
        """Withdraws the announcement (idempotent): the request was queued or failed."""
        if self.open:
            self.open = False
            self.batcher._incoming -= 1


class MicroBatcher:
    """Groups concurrent requests into shared forward passes.

    Args:
        predictor: the loaded model (may be set later, before the first request).
        max_batch_size: images per forward pass; 1 turns grouping off (one request per pass).
        max_wait_ms: how long the first request of a batch may wait for others.

    Use from one asyncio event loop: ``start()``, then ``await submit(...)`` from request
    handlers, and ``await stop()`` at shutdown.
    """

    def __init__(
        self, predictor: PredictorLike | None, *, max_batch_size: int, max_wait_ms: float
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError(f"bad batching limits {max_batch_size=} {max_wait_ms=}")
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Item] | None = None
        self._carry: _Item | None = None
        self._incoming = 0
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="visionauto-fwd")

    def start(self) -> None:
        """Starts the collector task on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Cancels the collector and shuts the worker thread down."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    def announce(self) -> Ticket:
        """Tells the collector a request is on its way (decoding); close the ticket when queued."""
        self._incoming += 1
        return Ticket(self)

    async def submit(
        self,
        images: list[Any],
        overrides: dict[str, Any] | None = None,
        *,
        ticket: Ticket | None = None,
    ) -> list[dict]:
        """Queues one request's images; returns its results in input order.

        Raises:
            Whatever ``predictor.predict`` raised for this request's group.
        """
        assert self._queue is not None, "MicroBatcher.start() was not called"
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(list(images), dict(overrides or {}), future))
        if ticket is not None:
            ticket.close()
        return await future

    async def _next(self, timeout: float | None) -> _Item | None:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        assert self._queue is not None
        if timeout is None:
            return await self._queue.get()
        if not self._queue.empty():
            return self._queue.get_nowait()
        # Nobody queued and nobody decoding: waiting could only add latency.
        if self._incoming <= 0 or timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _collect(self) -> list[_Item]:
        loop = asyncio.get_running_loop()
        first = await self._next(None)
        items, count = [first], len(first.images)
        deadline = loop.time() + self.max_wait_s
        while count < self.max_batch_size:
            item = await self._next(deadline - loop.time())
            if item is None:
                break
            if count + len(item.images) > self.max_batch_size:
                self._carry = item  # starts the next batch
                break
            items.append(item)
            count += len(item.images)
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            groups: dict[str, list[_Item]] = {}
            for item in items:
                groups.setdefault(json.dumps(item.overrides, sort_keys=True), []).append(item)
            for group in groups.values():
                await self._forward(loop, group)

    async def _forward(self, loop: asyncio.AbstractEventLoop, group: list[_Item]) -> None:
        images = [image for item in group for image in item.images]
        self.stats.forward_calls += 1
        self.stats.max_images_per_call = max(self.stats.max_images_per_call, len(images))
        try:
            results = await loop.run_in_executor(
                self._executor, self._predict, images, group[0].overrides
            )
        except Exception as err:  # routed to every request of the group; the loop goes on
            for item in group:
                if not item.future.done():
                    item.future.set_exception(err)
            self.stats.requests += len(group)
            return
        start = 0
        for item in group:
            end = start + len(item.images)
            if not item.future.done():  # the client may have gone away
                item.future.set_result(results[start:end])
            start = end
        self.stats.requests += len(group)
        self.stats.images += len(images)

    def _predict(self, images: list[Any], overrides: dict[str, Any]) -> list[dict]:
        # A request larger than max_batch_size is split by the predictor: memory stays bounded.
        assert self.predictor is not None, "requests reach only loaded deployments"
        results = self.predictor.predict(
            images, overrides=overrides or None, batch_size=self.max_batch_size
        )
        assert len(results) == len(images), "predictor returned a wrong number of results"
        return results
