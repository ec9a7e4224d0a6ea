"""VOC detection metrics on hand-computed cases: AP, precision/recall, crowd and -1.0 rules."""

from __future__ import annotations

import pytest
import torch

from visionauto.errors import ConfigError
from visionauto.metrics.detection import DetectionEvaluator, DetectionResult


def _pred(boxes: list, scores: list, labels: list) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def _target(boxes: list, labels: list, iscrowd: list | None = None) -> dict:
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if iscrowd is not None:
        target["iscrowd"] = torch.tensor(iscrowd, dtype=torch.int64)
    return target


def _evaluate(preds: list[dict], targets: list[dict], names=("a",), **kwargs) -> DetectionResult:
    evaluator = DetectionEvaluator(list(names), **kwargs)
    evaluator.update(preds, targets)
    return evaluator.compute()


# One class, 3 ground-truth boxes A, B, C and 4 predictions (score: what it hits):
#   0.9: A exactly (IoU 1) -> TP;  0.8: nothing -> FP;  0.7: B exactly -> TP;
#   0.6: A again (already matched) -> FP.  C is never found.
# In score order: TP FP TP FP -> cumulative precision 1, 1/2, 2/3, 1/2; recall 1/3, 1/3, 2/3, 2/3.
# Monotone precision at the unique recalls: 1/3 -> 1.0, 2/3 -> max(2/3, 1/2) = 2/3.
# AP = 1/3 * 1 + (2/3 - 1/3) * 2/3 = 5/9.
GT_ABC = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]]
PRED_4 = _pred(
    [[0, 0, 10, 10], [100, 100, 110, 110], [20, 0, 30, 10], [0, 0, 10, 10]],
    [0.9, 0.8, 0.7, 0.6],
    [0, 0, 0, 0],
)


def test_hand_computed_average_precision_and_curve() -> None:
    result = _evaluate([PRED_4], [_target(GT_ABC, [0, 0, 0])])
    assert result.per_class["a"]["average_precision"] == pytest.approx(5 / 9, abs=1e-12)
    assert result.scalars["mean_average_precision"] == pytest.approx(5 / 9, abs=1e-12)
    # At the default score threshold 0.3 all 4 predictions count: 2 TP of 4, 2 of 3 GT found.
    assert result.scalars["precision"] == pytest.approx(0.5)
    assert result.scalars["recall"] == pytest.approx(2 / 3)
    assert result.pr_curves["a"]["recall"] == pytest.approx([1 / 3, 2 / 3])
    assert result.pr_curves["a"]["precision"] == pytest.approx([1.0, 2 / 3])
    assert all(type(v) is float for v in result.scalars.values())
    assert set(result.scalars) == {"mean_average_precision", "precision", "recall"}


def test_score_threshold_applies_to_precision_and_recall_only() -> None:
    # At 0.65 only the predictions scoring 0.9, 0.8, 0.7 count: 2 TP of 3.
    result = _evaluate([PRED_4], [_target(GT_ABC, [0, 0, 0])], score_threshold=0.65)
    assert result.scalars["precision"] == pytest.approx(2 / 3)
    assert result.scalars["recall"] == pytest.approx(2 / 3)
    assert result.scalars["mean_average_precision"] == pytest.approx(5 / 9)


def test_iou_exactly_at_the_threshold_matches() -> None:
    gt = _target([[0, 0, 10, 10]], [0])
    at = _evaluate([_pred([[0, 0, 10, 5]], [0.9], [0])], [gt])  # IoU 50/100 = 0.5
    below = _evaluate([_pred([[0, 0, 10, 4.9]], [0.9], [0])], [gt])  # IoU 0.49
    assert at.scalars["mean_average_precision"] == 1.0
    assert below.scalars["mean_average_precision"] == 0.0
    strict = _evaluate([_pred([[0, 0, 10, 5]], [0.9], [0])], [gt], iou_threshold=0.75)
    assert strict.scalars["mean_average_precision"] == 0.0


def test_greedy_matching_takes_the_best_unmatched_ground_truth() -> None:
    # G1 = [0,10]x[0,10], G2 = [5,15]x[0,10].
    # 0.9 at [4,14]: IoU G1 60/140 = 0.43, G2 90/110 = 0.82 -> matches G2.
    # 0.8 at [3,13]: IoU G1 70/130 = 0.54, G2 80/120 = 0.67; G2 is taken -> matches G1 (TP).
    # Both TP -> AP 1.0 (a "best GT or nothing" rule would make the second one a FP).
    preds = _pred([[4, 0, 14, 10], [3, 0, 13, 10]], [0.9, 0.8], [0, 0])
    result = _evaluate([preds], [_target([[0, 0, 10, 10], [5, 0, 15, 10]], [0, 0])])
    assert result.scalars["mean_average_precision"] == 1.0
    assert result.scalars["precision"] == 1.0


def test_predictions_are_pooled_over_images_before_ranking() -> None:
    # Image 1: one GT, found by a 0.5 prediction.  Image 2: one GT, a 0.9 prediction elsewhere.
    # Pooled ranking: FP (0.9), TP (0.5) -> precision 1/2 at recall 1/2 -> AP = 1/2 * 1/2 = 0.25.
    preds = [_pred([[0, 0, 10, 10]], [0.5], [0]), _pred([[50, 50, 60, 60]], [0.9], [0])]
    targets = [_target([[0, 0, 10, 10]], [0]), _target([[0, 0, 10, 10]], [0])]
    assert _evaluate(preds, targets).scalars["mean_average_precision"] == pytest.approx(0.25)
    # The same images given in two update() calls give the same result.
    evaluator = DetectionEvaluator(["a"])
    evaluator.update(preds[:1], targets[:1])
    evaluator.update(preds[1:], targets[1:])
    assert evaluator.compute().scalars["mean_average_precision"] == pytest.approx(0.25)


def test_crowd_ground_truth_is_not_recalled_and_its_match_is_a_false_positive() -> None:
    # GT: A (normal) and a crowd region Z. 0.9 hits Z exactly -> FP; 0.8 hits A -> TP.
    # Ranking FP, TP with 1 countable GT: precision 1/2 at recall 1 -> AP 0.5; recall 1/1.
    preds = _pred([[50, 50, 100, 100], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])
    target = _target([[0, 0, 10, 10], [50, 50, 100, 100]], [0, 0], iscrowd=[0, 1])
    result = _evaluate([preds], [target])
    assert result.per_class["a"] == pytest.approx(
        {"average_precision": 0.5, "precision": 0.5, "recall": 1.0}
    )


def test_class_with_only_crowd_ground_truth_is_undefined() -> None:
    target = _target([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1], iscrowd=[0, 1])
    result = _evaluate([_pred([[0, 0, 10, 10]], [0.9], [0])], [target], names=("a", "b"))
    assert result.per_class["b"] == {"average_precision": -1.0, "precision": -1.0, "recall": -1.0}
    assert result.scalars["mean_average_precision"] == 1.0  # b left out of the mean


def test_undefined_values_and_multiclass_means() -> None:
    # a: the 5/9 case above (precision 1/2, recall 2/3 at 0.3).
    # b: 2 GT, never predicted -> AP 0, recall 0, precision undefined (no prediction).
    # c: no GT, one prediction at 0.5 -> AP and recall undefined, precision 0/1 = 0.
    # d: no GT, no prediction -> everything undefined.
    preds = _pred(
        PRED_4["boxes"].tolist() + [[70, 70, 80, 80]],
        PRED_4["scores"].tolist() + [0.5],
        [0, 0, 0, 0, 2],
    )
    target = _target(GT_ABC + [[60, 0, 70, 10], [80, 0, 90, 10]], [0, 0, 0, 1, 1])
    result = _evaluate([preds], [target], names=("a", "b", "c", "d"))
    assert result.per_class["b"] == {"average_precision": 0.0, "precision": -1.0, "recall": 0.0}
    assert result.per_class["c"] == {"average_precision": -1.0, "precision": 0.0, "recall": -1.0}
    assert result.per_class["d"] == {"average_precision": -1.0, "precision": -1.0, "recall": -1.0}
    # Means over defined values: AP (5/9 + 0)/2, precision (1/2 + 0)/2, recall (2/3 + 0)/2.
    assert result.scalars["mean_average_precision"] == pytest.approx(5 / 18)
    assert result.scalars["precision"] == pytest.approx(0.25)
    assert result.scalars["recall"] == pytest.approx(1 / 3)
    assert result.pr_curves["b"] == {"precision": [], "recall": []}


def test_a_wrong_class_prediction_does_not_use_up_the_ground_truth() -> None:
    # 0.9 of class b over the class-a object: FP for b; 0.5 of class a on it: TP for a.
    preds = _pred([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.5], [1, 0])
    result = _evaluate([preds], [_target([[0, 0, 10, 10]], [0])], names=("a", "b"))
    assert result.per_class["a"]["average_precision"] == 1.0
    assert result.per_class["b"] == {"average_precision": -1.0, "precision": 0.0, "recall": -1.0}


def test_no_predictions_no_ground_truth_and_empty_evaluations() -> None:
    empty_pred = _pred([], [], [])
    empty_target = _target([], [])
    nothing = _evaluate([], [], names=("a", "b"))
    assert nothing.scalars == {"mean_average_precision": -1.0, "precision": -1.0, "recall": -1.0}
    no_preds = _evaluate([empty_pred], [_target([[0, 0, 5, 5]], [1])], names=("a", "b"))
    assert no_preds.scalars == {"mean_average_precision": 0.0, "precision": -1.0, "recall": 0.0}
    no_gt = _evaluate([_pred([[0, 0, 5, 5]], [0.9], [0])], [empty_target], names=("a", "b"))
    assert no_gt.scalars == {"mean_average_precision": -1.0, "precision": 0.0, "recall": -1.0}


def test_reset_forgets_everything() -> None:
    evaluator = DetectionEvaluator(["a"])
    evaluator.update([PRED_4], [_target(GT_ABC, [0, 0, 0])])
    evaluator.reset()
    evaluator.update([_pred([[0, 0, 10, 10]], [0.9], [0])], [_target([[0, 0, 10, 10]], [0])])
    assert evaluator.compute().scalars["mean_average_precision"] == 1.0


def _square_masks(spec: list[tuple[int, int, int, int]], size: int = 8) -> torch.Tensor:
    """bool[N,size,size] with rows r0:r1, cols c0:c1 set for each (r0, r1, c0, c1)."""
    masks = torch.zeros(len(spec), size, size, dtype=torch.bool)
    for i, (r0, r1, c0, c1) in enumerate(spec):
        masks[i, r0:r1, c0:c1] = True
    return masks


def test_segm_uses_mask_iou_with_probability_masks() -> None:
    # 8x8 image. GT1 = rows 0-3 x cols 0-3 (16 px), GT2 = rows 4-7 x cols 4-7 (16 px).
    # P1 (0.9): rows 0-3 x cols 0-1 (8 px inside GT1) -> IoU 8/16 = 0.5.
    # P2 (0.6): rows 4-7 x cols 5-7 at prob 0.8, col 4 at prob 0.4 (below the 0.5 cut)
    #           -> 12 px inside GT2 -> IoU 12/16 = 0.75.
    # The boxes are all zeros: only the masks may decide.
    probs = torch.zeros(2, 1, 8, 8)
    probs[0, 0, 0:4, 0:2] = 0.9
    probs[1, 0, 4:8, 5:8] = 0.8
    probs[1, 0, 4:8, 4] = 0.4
    pred = {**_pred([[0, 0, 0, 0]] * 2, [0.9, 0.6], [0, 0]), "masks": probs}
    target = {
        **_target([[0, 0, 0, 0]] * 2, [0, 0]),
        "masks": _square_masks([(0, 4, 0, 4), (4, 8, 4, 8)]).to(torch.uint8),
    }
    at_half = _evaluate([pred], [target], iou_type="segm")
    assert at_half.scalars["mean_average_precision"] == 1.0
    # At IoU 0.6, P1 is a FP: ranking FP, TP with 2 GT -> precision 1/2 at recall 1/2 -> AP 0.25.
    strict = _evaluate([pred], [target], iou_type="segm", iou_threshold=0.6)
    assert strict.scalars["mean_average_precision"] == pytest.approx(0.25)
    assert strict.scalars["precision"] == pytest.approx(0.5)
    # Bool [K,H,W] masks give the same result as probabilities [K,1,H,W].
    bool_pred = {**pred, "masks": probs[:, 0] > 0.5}
    same = _evaluate([bool_pred], [target], iou_type="segm", iou_threshold=0.6)
    assert same.scalars == strict.scalars


def test_segm_crowd_and_empty_images() -> None:
    # A crowd mask found exactly is still a FP, and an image with nothing at all changes nothing.
    pred = {**_pred([[0, 0, 0, 0]], [0.9], [0]), "masks": _square_masks([(0, 4, 0, 4)])}
    target = {
        **_target([[0, 0, 0, 0]] * 2, [0, 0], iscrowd=[1, 0]),
        "masks": _square_masks([(0, 4, 0, 4), (4, 8, 4, 8)]),
    }
    empty_pred = {**_pred([], [], []), "masks": torch.zeros(0, 1, 8, 8)}
    empty_target = {**_target([], []), "masks": torch.zeros(0, 8, 8, dtype=torch.uint8)}
    result = _evaluate([pred, empty_pred], [target, empty_target], iou_type="segm")
    assert result.per_class["a"] == {"average_precision": 0.0, "precision": 0.0, "recall": 0.0}


def test_metric_type_none_and_coco_key_sets() -> None:
    pred, target = [PRED_4], [_target(GT_ABC, [0, 0, 0])]
    assert _evaluate(pred, target, metric_type="none") == DetectionResult()
    coco = _evaluate(pred, target, metric_type="coco")
    coco_keys = {
        "coco_map", "coco_map_50", "coco_map_75", "coco_map_small", "coco_map_medium",
        "coco_map_large", "coco_mar_1", "coco_mar_10", "coco_mar_100", "coco_mar_small",
        "coco_mar_medium", "coco_mar_large",
    }  # fmt: skip
    assert set(coco.scalars) == coco_keys | {"mean_average_precision"}
    assert coco.per_class == {} and coco.pr_curves == {}
    assert all(type(v) is float for v in coco.scalars.values())
    # COCO 101-point AP@0.5 of the 5/9 case: precision 1 up to recall 1/3, 2/3 up to 2/3, then 0
    # -> (34 * 1 + 33 * 2/3) / 101 = 56/101.
    assert coco.scalars["mean_average_precision"] == pytest.approx(56 / 101, abs=1e-6)
    assert coco.scalars["coco_map_50"] == coco.scalars["mean_average_precision"]
    both = _evaluate(pred, target, metric_type="coco_voc")
    assert set(both.scalars) == coco_keys | {"mean_average_precision", "precision", "recall"}
    assert both.scalars["mean_average_precision"] == pytest.approx(5 / 9)
    assert both.scalars["coco_map_50"] == pytest.approx(56 / 101, abs=1e-6)


def test_coco_with_empty_images_and_no_predictions() -> None:
    empty = _pred([], [], [])
    result = _evaluate(
        [empty, empty], [_target([[0, 0, 10, 10]], [0]), _target([], [])], metric_type="coco_voc"
    )
    assert result.scalars["coco_map"] == 0.0
    assert result.scalars["mean_average_precision"] == 0.0
    assert result.scalars["precision"] == -1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric_type": "map"}, r"validation_metric_type='map' is unknown; use one of none, voc"),
        ({"iou_type": "mask"}, r"iou_type='mask' is unknown; use 'bbox' or 'segm'"),
        ({"iou_threshold": 0.0}, r"validation_iou_threshold=0.0 is out of range"),
        ({"score_threshold": 1.5}, r"box_score_threshold=1.5 is out of range"),
    ],
)
def test_bad_settings_raise_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DetectionEvaluator(["a"], **kwargs)


def test_bad_class_names_and_inputs() -> None:
    with pytest.raises(ConfigError, match="repeated: a"):
        DetectionEvaluator(["a", "b", "a"])
    with pytest.raises(ConfigError, match="at least one class name"):
        DetectionEvaluator([])
    evaluator = DetectionEvaluator(["a"])
    with pytest.raises(ValueError, match=r"prediction 0: labels must be 0-based indices below 1"):
        evaluator.update([_pred([[0, 0, 1, 1]], [0.5], [1])], [_target([], [])])
    with pytest.raises(ValueError, match="got 1 predictions for 2 targets"):
        evaluator.update([_pred([], [], [])], [_target([], []), _target([], [])])
    segm = DetectionEvaluator(["a"], iou_type="segm")
    with pytest.raises(ValueError, match="target 0 has no 'masks'"):
        segm.update([{**_pred([], [], []), "masks": torch.zeros(0, 4, 4)}], [_target([], [])])
    with pytest.raises(ValueError, match=r"image 0: prediction masks are \(4, 4\) but target"):
        segm.update(
            [{**_pred([], [], []), "masks": torch.zeros(0, 1, 4, 4)}],
            [{**_target([], []), "masks": torch.zeros(0, 5, 4)}],
        )
