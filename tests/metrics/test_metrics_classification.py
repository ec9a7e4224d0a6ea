"""Classification metrics: hand-computed values on small inputs, Azure names, -1 for undefined."""

from __future__ import annotations

import math

import pytest
import torch

from visionauto.metrics import compute_classification_metrics

AVERAGES = ("macro", "micro", "weighted")
COMMON = [
    f"{m}_{a}"
    for m in ("precision_score", "recall_score", "f1_score", "AUC", "average_precision_score")
    for a in AVERAGES
]


def _probs_for(pred: list[int], num_classes: int, confidence: float = 0.8) -> torch.Tensor:
    rest = (1 - confidence) / (num_classes - 1)
    probs = torch.full((len(pred), num_classes), rest)
    probs[torch.arange(len(pred)), torch.tensor(pred)] = confidence
    return probs


@pytest.fixture
def three_class():
    # true 0,0,1,1,2,2 ; predicted 0,1,1,1,2,0 → confusion [[1,1,0],[0,2,0],[1,0,1]]
    probs = _probs_for([0, 1, 1, 1, 2, 0], 3)
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    return compute_classification_metrics(
        probs, targets, multilabel=False, class_names=["cat", "dog", "fox"]
    )


def test_three_class_confusion_matrix_and_counts(three_class) -> None:
    assert three_class.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert three_class.per_class["cat"]["precision"] == pytest.approx(0.5)
    assert three_class.per_class["dog"]["precision"] == pytest.approx(2 / 3)
    assert three_class.per_class["dog"]["recall"] == pytest.approx(1.0)
    assert three_class.per_class["dog"]["f1_score"] == pytest.approx(0.8)
    assert three_class.per_class["fox"]["f1_score"] == pytest.approx(2 / 3)
    assert three_class.per_class["fox"]["support"] == 2.0


def test_three_class_scalars_by_hand(three_class) -> None:
    s = three_class.scalars
    assert set(s) == {"accuracy", *COMMON}
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["precision_score_macro"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert s["recall_score_macro"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert s["f1_score_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # Equal supports: weighted = macro; micro precision = recall = F1 = accuracy for multiclass.
    assert s["f1_score_weighted"] == pytest.approx(s["f1_score_macro"])
    for name in ("precision_score_micro", "recall_score_micro", "f1_score_micro"):
        assert s[name] == pytest.approx(4 / 6)


def test_three_class_auc_by_hand(three_class) -> None:
    # Scores are 0.8 for the predicted class, 0.1 otherwise; AUC = share of (positive, negative)
    # pairs ranked right, ties count 1/2. "dog": positives 0.8, 0.8 vs negatives 0.1, 0.8, 0.1,
    # 0.1 → each positive 3 + 0.5 → 7/8. "cat": positives 0.8, 0.1 vs negatives 0.1 x3, 0.8 →
    # (3 + 0.5) + (3 * 0.5) → 5/8.
    assert three_class.per_class["dog"]["AUC"] == pytest.approx(7 / 8)
    assert three_class.per_class["cat"]["AUC"] == pytest.approx(5 / 8)


def test_binary_matches_the_textbook_example() -> None:
    # scikit-learn's documentation example: AUC 0.75, average precision 0.8333.
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    probs = torch.stack([1 - scores, scores], dim=1)
    result = compute_classification_metrics(
        probs, torch.tensor([0, 0, 1, 1]), multilabel=False, class_names=["no", "yes"]
    )
    s = result.scalars
    assert s["AUC_binary"] == pytest.approx(0.75)
    assert s["average_precision_score_binary"] == pytest.approx(5 / 6)
    # Predicted yes for 0.8 only: precision 1, recall 0.5, F1 2/3.
    assert s["precision_score_binary"] == pytest.approx(1.0)
    assert s["recall_score_binary"] == pytest.approx(0.5)
    assert s["f1_score_binary"] == pytest.approx(2 / 3)
    assert s["accuracy"] == pytest.approx(0.75)


def test_undefined_values_are_minus_one_and_left_out_of_means() -> None:
    # Class "c" never occurs and is never predicted: its precision, recall, F1, AUC, AP are -1.
    probs = _probs_for([0, 1, 1, 0], 3)
    result = compute_classification_metrics(
        probs, torch.tensor([0, 1, 0, 1]), multilabel=False, class_names=["a", "b", "c"]
    )
    c = result.per_class["c"]
    assert c == {
        "precision": -1.0,
        "recall": -1.0,
        "f1_score": -1.0,
        "support": 0.0,
        "AUC": -1.0,
        "average_precision": -1.0,
    }
    assert result.scalars["recall_score_macro"] == pytest.approx(0.5)  # mean of a, b only
    assert result.scalars["AUC_macro"] == pytest.approx(
        result.per_class["a"]["AUC"] / 2 + result.per_class["b"]["AUC"] / 2
    )
    assert not any(math.isnan(v) for v in result.scalars.values())


def test_present_class_never_predicted_has_precision_zero() -> None:
    probs = _probs_for([0, 0, 0], 2)
    result = compute_classification_metrics(
        probs, torch.tensor([0, 1, 1]), multilabel=False, class_names=["a", "b"]
    )
    assert result.per_class["b"]["precision"] == 0.0
    assert result.scalars["precision_score_binary"] == 0.0
    assert result.scalars["precision_score_macro"] == pytest.approx((1 / 3 + 0.0) / 2)


def test_nan_probabilities_never_give_nan_metrics() -> None:
    probs = torch.full((4, 3), float("nan"))
    result = compute_classification_metrics(
        probs, torch.tensor([0, 1, 2, 0]), multilabel=False, class_names=["a", "b", "c"]
    )
    values = list(result.scalars.values()) + [
        v for row in result.per_class.values() for v in row.values()
    ]
    assert not any(math.isnan(v) for v in values)


@pytest.fixture
def multilabel():
    truth = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]])
    pred = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 0]])
    probs = torch.where(pred.bool(), torch.tensor(0.9), torch.tensor(0.2))
    probs[0, 2] = 0.45  # a true label just under the 0.5 threshold
    return compute_classification_metrics(
        probs, truth.float(), multilabel=True, class_names=["x", "y", "z"]
    )


def test_multilabel_iou_by_hand(multilabel) -> None:
    s = multilabel.scalars
    # Per image: 1/2, 1/2, 1.0 (no true and no predicted label), 1 → mean 0.75.
    assert s["iou"] == pytest.approx(0.75)
    # Per class tp/(tp+fp+fn): x 2/2, y 2/2, z 0/2.
    assert s["iou_macro"] == pytest.approx(2 / 3)
    assert s["iou_micro"] == pytest.approx(4 / 6)
    assert s["iou_weighted"] == pytest.approx((2 * 1 + 2 * 1 + 1 * 0) / 5)
    assert multilabel.per_class["z"]["iou"] == 0.0


def test_multilabel_names_accuracy_and_no_confusion_matrix(multilabel) -> None:
    s = multilabel.scalars
    assert set(s) == {"accuracy", "iou", "iou_macro", "iou_micro", "iou_weighted", *COMMON}
    assert s["accuracy"] == pytest.approx(0.5)  # exact match: images 3 and 4
    assert multilabel.confusion_matrix is None
    assert s["f1_score_micro"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 1))
    # z: scores 0.45 (true), 0.9 (false), 0.2, 0.2 → AUC (1 + 1 + 0) / 3 = 2/3.
    assert multilabel.per_class["z"]["AUC"] == pytest.approx(2 / 3)


def test_empty_evaluation_set_is_all_undefined() -> None:
    result = compute_classification_metrics(
        torch.zeros(0, 2),
        torch.zeros(0, dtype=torch.long),
        multilabel=False,
        class_names=["a", "b"],
    )
    assert result.scalars["accuracy"] == -1.0
    assert result.confusion_matrix == [[0, 0], [0, 0]]


def test_shape_mismatch_is_a_bug_and_says_so() -> None:
    with pytest.raises(ValueError, match=r"probs must be \[N, 3\], got \(4, 2\)"):
        compute_classification_metrics(
            torch.rand(4, 2),
            torch.zeros(4, dtype=torch.long),
            multilabel=False,
            class_names=["a", "b", "c"],
        )


def test_agrees_with_scikit_learn_on_random_data() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    probs = torch.randn(60, 4, generator=gen).softmax(1)
    targets = torch.randint(0, 4, (60,), generator=gen)
    s = compute_classification_metrics(
        probs, targets, multilabel=False, class_names=list("abcd")
    ).scalars
    y, p = targets.numpy(), probs.numpy()
    onehot = torch.nn.functional.one_hot(targets, 4).numpy()
    for avg in AVERAGES:
        assert s[f"f1_score_{avg}"] == pytest.approx(metrics.f1_score(y, p.argmax(1), average=avg))
        assert s[f"AUC_{avg}"] == pytest.approx(metrics.roc_auc_score(onehot, p, average=avg))
        assert s[f"average_precision_score_{avg}"] == pytest.approx(
            metrics.average_precision_score(onehot, p, average=avg)
        )
    truth = (torch.rand(60, 4, generator=gen) > 0.6).long()
    scores = torch.rand(60, 4, generator=gen)
    s = compute_classification_metrics(
        scores, truth, multilabel=True, class_names=list("abcd")
    ).scalars
    hard = (scores.numpy() >= 0.5).astype(int)
    for avg in AVERAGES:
        assert s[f"iou_{avg}"] == pytest.approx(
            metrics.jaccard_score(truth.numpy(), hard, average=avg)
        )
    assert s["iou"] == pytest.approx(
        metrics.jaccard_score(truth.numpy(), hard, average="samples", zero_division=1.0)
    )
