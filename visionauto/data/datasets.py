"""Classification datasets over validated records, with an optional in-memory image cache."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from visionauto.data.images import load_image, read_image_size
from visionauto.data.records import ImageRecord
from visionauto.data.transforms import ImageTransform
from visionauto.errors import DataError

CACHE_MEMORY_FRACTION = 0.25
_SIZE_SAMPLES = 8


def _label_targets(
    records: Sequence[ImageRecord], class_names: Sequence[str], multilabel: bool
) -> torch.Tensor:
    index = {name: i for i, name in enumerate(class_names)}

    def lookup(name: str, record: ImageRecord) -> int:
        if name not in index:
            raise DataError(
                f"{record.source}: class {name!r} is not one of the model's classes "
                f"{list(class_names)}; validate the data with the same class list."
            )
        return index[name]

    if multilabel:
        targets = torch.zeros(len(records), len(class_names), dtype=torch.float32)
        for row, record in enumerate(records):
            for name in record.label:
                targets[row, lookup(name, record)] = 1.0
        return targets
    return torch.tensor([lookup(r.label, r) for r in records], dtype=torch.int64)


def class_counts(
    records: Sequence[ImageRecord], class_names: Sequence[str], multilabel: bool
) -> torch.Tensor:
    """Images per class: ``f32[C]`` (for multilabel, images in which the class is present)."""
    targets = _label_targets(records, class_names, multilabel)
    if multilabel:
        return targets.sum(dim=0) if len(records) else torch.zeros(len(class_names))
    return torch.bincount(targets, minlength=len(class_names)).to(torch.float32)


class ClassificationDataset(Dataset):
    """Images and targets of a multiclass or multilabel classification split.

    Items are ``{"image": f32[3, H, W], "target": i64[] (multiclass) | f32[C] (multilabel)}``.

    With ``cache=True`` every image is decoded once, up front, in the constructor (a thread
    pool) and kept as a uint8 tensor ``[3, H, W]``; DataLoader workers forked afterwards share
    that memory instead of decoding again.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        *,
        multilabel: bool,
        transform: ImageTransform,
        cache: bool = False,
        draft_size: int | None = None,
    ) -> None:
        """Build the dataset.

        Args:
            records: validated records (labels must be in ``class_names``).
            class_names: class order of the model outputs.
            multilabel: multi-hot float targets instead of class indices.
            transform: image pipeline, e.g. from ``build_classification_transforms``.
            cache: decode all images now and keep them in memory.
            draft_size: let the JPEG decoder downscale while both sides stay >= this size.
        """
        self.records = list(records)
        self.class_names = list(class_names)
        self.multilabel = multilabel
        self.transform = transform
        self.draft_size = draft_size
        self.targets = _label_targets(self.records, self.class_names, multilabel)
        self._cache: list[torch.Tensor] | None = None
        if cache:
            self._cache = self._decode_all()

    def _decode(self, record: ImageRecord) -> torch.Tensor:
        # Kept channels-last (a [3, H, W] view of HWC memory): torch's fast uint8 resize needs it.
        image = np.array(load_image(record.image, draft_size=self.draft_size))
        return torch.from_numpy(image).permute(2, 0, 1)

    def _decode_all(self) -> list[torch.Tensor]:
        workers = min(16, 2 * (os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self._decode, self.records))

    @property
    def cached(self) -> bool:
        """True when the decoded images are held in memory."""
        return self._cache is not None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._cache is not None:
            image = self._cache[index]
        else:
            image = load_image(self.records[index].image, draft_size=self.draft_size)
        return {"image": self.transform(image), "target": self.targets[index]}


def available_memory_bytes() -> int | None:
    """Memory this process may still use: min of the system's and the cgroup's, None if unknown."""
    candidates = []
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text().strip())
            candidates.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    if not candidates and hasattr(os, "sysconf"):
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            pass
    return min(candidates) if candidates else None


def estimate_decoded_bytes(records: Sequence[ImageRecord]) -> int:
    """Bytes of all images decoded as RGB (``w * h * 3``), from ``image_details`` when given,
    else from the average of a few sampled image headers."""
    known = [r.width * r.height * 3 for r in records if r.width and r.height]
    unknown = [r for r in records if not (r.width and r.height)]
    if not unknown:
        return sum(known)
    step = max(1, len(unknown) // _SIZE_SAMPLES)
    sampled = []
    for record in unknown[::step][:_SIZE_SAMPLES]:
        try:
            width, height, _ = read_image_size(record.image)
            sampled.append(width * height * 3)
        except DataError:
            continue
    if not sampled and not known:
        return 0
    average = float(np.mean(sampled)) if sampled else float(np.mean(known))
    return sum(known) + int(average * len(unknown))


def should_cache(records: Sequence[ImageRecord], mode: str | bool) -> bool:
    """Decide ``data.cache_images``: ``"true"``, ``"false"``, or ``"auto"`` = the decoded images
    fit in a quarter of the available memory."""
    mode = str(mode).lower()
    if mode in ("true", "false"):
        return mode == "true"
    if mode != "auto":
        raise ValueError(f"cache mode {mode!r} is not auto, true or false")
    available = available_memory_bytes()
    if available is None or not records:
        return False
    return estimate_decoded_bytes(records) < CACHE_MEMORY_FRACTION * available
