"""Under DDP each process evaluates part of the images; merge_from() joins them all."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from visionauto.metrics.detection import DetectionEvaluator

sys.path.insert(0, str(Path(__file__).parent))
from test_metrics_detection_reference import NAMES, _random_set  # noqa: E402


def _rank_main(rank: int, world: int, folder: str) -> None:
    init = f"file://{folder}/init"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        preds, targets = _random_set(5, 24, crowd=True, masks=False)
        evaluator = DetectionEvaluator(NAMES, metric_type="coco_voc")
        evaluator.update(preds[rank::world], targets[rank::world])  # as a DistributedSampler
        states: list = [None] * world
        dist.all_gather_object(states, evaluator.state())
        evaluator.merge_from(states)
        result = evaluator.compute()
        payload = {"scalars": result.scalars, "per_class": result.per_class}
        Path(folder, f"rank{rank}.json").write_text(json.dumps(payload))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_merge_from_gives_the_result_of_one_evaluator_on_all_images(iou_type: str) -> None:
    preds, targets = _random_set(9, 12, crowd=True, masks=True)
    single = DetectionEvaluator(NAMES, metric_type="coco_voc", iou_type=iou_type)
    single.update(preds, targets)
    shards = []
    for rank in range(3):
        shard = DetectionEvaluator(NAMES, metric_type="coco_voc", iou_type=iou_type)
        shard.update(preds[rank::3], targets[rank::3])
        shards.append(shard)
    states = pickle.loads(pickle.dumps([s.state() for s in shards]))  # as all_gather_object
    shards[1].merge_from(states)
    merged, expected = shards[1].compute(), single.compute()
    assert merged.scalars == pytest.approx(expected.scalars, abs=1e-9)
    assert merged.per_class == expected.per_class
    assert shards[0].compute().scalars != expected.scalars  # a shard alone differs
    # Merging again replaces (never adds to) what the evaluator holds.
    shards[1].merge_from(states)
    assert shards[1].compute().scalars == pytest.approx(expected.scalars, abs=1e-9)


@pytest.mark.slow
def test_compute_joins_the_states_of_every_process(tmp_path: Path) -> None:
    preds, targets = _random_set(5, 24, crowd=True, masks=False)
    single = DetectionEvaluator(NAMES, metric_type="coco_voc")
    single.update(preds, targets)
    expected = single.compute()
    mp.spawn(_rank_main, args=(2, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["scalars"] == pytest.approx(expected.scalars, abs=1e-9)
        for name in NAMES:
            assert got["per_class"][name] == pytest.approx(expected.per_class[name], abs=1e-12)
