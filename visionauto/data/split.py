"""Seeded train/validation split (Azure's ``validation_data_size``, default 20%).

Multiclass splits are stratified: each class with at least two images gets at least one
validation image and keeps at least one training image. Multilabel and detection splits are
random, then patched so that every class with at least two images appears in both parts when
possible. Both parts keep the input order.
"""

from __future__ import annotations

import random
from collections import defaultdict

from visionauto.data.records import ImageRecord, record_classes


def _stratified(records: list[ImageRecord], size: float, rng: random.Random) -> set[int]:
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_class[str(record.label)].append(index)
    val: set[int] = set()
    for name in sorted(by_class):
        indices = by_class[name]
        if len(indices) < 2:
            continue
        n_val = min(len(indices) - 1, max(1, round(len(indices) * size)))
        val.update(rng.sample(indices, n_val))
    return val


def _cover_classes(
    records: list[ImageRecord], val: set[int], task: str, rng: random.Random
) -> None:
    """Move images so each class with >= 2 images is in both parts, if that loses no class."""
    classes = [set(record_classes(r, task)) for r in records]

    def count(indices: set[int] | list[int]) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for i in indices:
            for name in classes[i]:
                counts[name] += 1
        return counts

    train = [i for i in range(len(records)) if i not in val]
    for name in sorted({n for c in classes for n in c}):
        for source, target_is_val in ((train, True), (sorted(val), False)):
            in_target = count(val if target_is_val else train).get(name, 0)
            source_counts = count(source)
            if in_target or source_counts.get(name, 0) < 2:
                continue
            # Only move an image whose every class stays present in the source part.
            movable = [
                i
                for i in source
                if name in classes[i] and all(source_counts[n] >= 2 for n in classes[i])
            ]
            if not movable or len(source) < 2:
                continue
            moved = rng.choice(movable)
            if target_is_val:
                val.add(moved)
                train.remove(moved)
            else:
                val.discard(moved)
                train.append(moved)


def split_records(
    records: list[ImageRecord], *, task: str, validation_data_size: float, seed: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Split records into training and validation parts, reproducibly.

    Args:
        records: validated records.
        task: ``classification`` (stratified by class) or another task (random + class cover).
        validation_data_size: fraction in (0, 1) held out for validation.
        seed: random seed; the same seed and records always give the same split.

    Returns:
        ``(train, validation)``, each in input order. With fewer than two records everything
        stays in ``train``.
    """
    rng = random.Random(seed)
    if len(records) < 2:
        return list(records), []
    if task == "classification":
        val = _stratified(records, validation_data_size, rng)
    else:
        n_val = min(len(records) - 1, max(1, round(len(records) * validation_data_size)))
        val = set(rng.sample(range(len(records)), n_val))
        _cover_classes(records, val, task, rng)
    train_part = [r for i, r in enumerate(records) if i not in val]
    val_part = [r for i, r in enumerate(records) if i in val]
    return train_part, val_part
