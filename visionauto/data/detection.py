"""Object detection and instance segmentation datasets (torchvision ``transforms.v2`` style).

A record's label is a list of objects in Azure form (spec §3.1): normalized corners
``topX/topY/bottomX/bottomY``, ``isCrowd``, and for instance segmentation ``polygon`` (segments of
normalized x, y pairs). :class:`DetectionDataset` turns one record into::

    image: tv_tensors.Image u8[3, H, W]  (EXIF-upright RGB)
    target: {"boxes": tv_tensors.BoundingBoxes f32[N, 4] XYXY absolute pixels, canvas (H, W),
             "labels": i64[N] (0-based class indices), "iscrowd": i64[N] (0/1),
             "masks": tv_tensors.Mask u8[N, H, W] (only with masks=True),
             "image_id": int (index into the dataset's records)}

Boxes use the real (decoded) image size, never ``image_details``. Objects whose box is thinner
than one pixel after clipping to the image are dropped. Images without objects are valid
negatives (``boxes`` of shape ``[0, 4]``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from visionauto.data.images import load_image
from visionauto.data.records import BOX_KEYS, ImageRecord, parse_object_label
from visionauto.errors import DataError

log = logging.getLogger(__name__)

MIN_BOX_SIDE = 1.0  # pixels; thinner boxes cannot be learned and break IoU-based matching
DetectionTransform = Callable[[tv_tensors.Image, dict[str, Any]], tuple[Any, dict[str, Any]]]


def parse_record_objects(record: ImageRecord, *, masks: bool) -> list[dict[str, Any]]:
    """Parse a record's label into objects with numbers (idempotent on parsed labels).

    Segmentation rules (a polygon is required) apply with ``masks=True``; otherwise objects
    may still carry a polygon instead of box keys, their box then comes from the polygon.

    Raises:
        DataError: the label is not a list of valid objects (message names the record).
    """
    label = record.label
    polygon_only = isinstance(label, list) and any(
        isinstance(obj, dict) and "polygon" in obj and not any(k in obj for k in BOX_KEYS)
        for obj in label
    )
    task = "instance_segmentation" if masks or polygon_only else "detection"
    try:
        return parse_object_label(label, task=task)
    except ValueError as err:
        raise DataError(
            f"{record.source}: {err}. Write the label as a list of objects like "
            '{"label": "can", "topX": 0.1, "topY": 0.2, "bottomX": 0.5, "bottomY": 0.6}'
            + (' with "polygon": [[x1, y1, x2, y2, ...]]' if task != "detection" else "")
            + ", and validate the data before training."
        ) from None


def _class_lookup(class_names: Sequence[str], record: ImageRecord) -> Callable[[str], int]:
    index = {name: i for i, name in enumerate(class_names)}

    def lookup(name: str) -> int:
        if name not in index:
            raise DataError(
                f"{record.source}: class {name!r} is not one of the model's classes "
                f"{list(class_names)}; validate the data with the same class list."
            )
        return index[name]

    return lookup


def object_class_counts(records: Sequence[ImageRecord], class_names: Sequence[str]) -> torch.Tensor:
    """Objects per class over all records, ``f32[C]`` (crowd objects included).

    Raises:
        DataError: a label is malformed or names a class outside ``class_names``.
    """
    counts = torch.zeros(len(class_names), dtype=torch.float32)
    for record in records:
        lookup = _class_lookup(class_names, record)
        for obj in parse_record_objects(record, masks=False):
            counts[lookup(obj["label"])] += 1.0
    return counts


def _polygon_box(polygons: list[list[float]], width: int, height: int) -> list[float]:
    xs = [v for segment in polygons for v in segment[0::2]]
    ys = [v for segment in polygons for v in segment[1::2]]
    if not xs or not ys:
        return [0.0, 0.0, 0.0, 0.0]
    return [min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height]


def _mask_box(mask: np.ndarray) -> list[float]:
    """Tight box of a bool mask ``[H, W]`` as a continuous extent (pixel i spans [i, i+1))."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def _rasterize(
    polygons: list[list[float]], width: int, height: int, record: ImageRecord, number: int
) -> np.ndarray:
    # Imported here: polygons.py pulls in scikit-image, which plain detection does not need.
    from visionauto.data.polygons import polygons_to_mask

    try:
        return np.asarray(polygons_to_mask(polygons, width, height), dtype=bool)
    except DataError as err:
        raise DataError(f"{record.source}: object {number}: {err}") from None


def build_target(
    record: ImageRecord,
    objects: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    width: int,
    height: int,
    *,
    masks: bool = False,
) -> dict[str, torch.Tensor]:
    """Convert parsed objects of one record into plain target tensors for a W x H image.

    Args:
        record: the record (for error messages and logs).
        objects: its parsed objects (:func:`parse_record_objects`).
        class_names: class order of the model outputs.
        width / height: real size of the decoded image in pixels.
        masks: also rasterize each object's polygons.

    Returns:
        ``{"boxes": f32[N, 4] XYXY pixels, "labels": i64[N], "iscrowd": i64[N]}`` and, with
        ``masks``, ``"masks": u8[N, H, W]``. Objects thinner than one pixel are left out.
        Without box keys the box is the mask's extent (``masks``) or the polygon's extent.
    """
    lookup = _class_lookup(class_names, record)
    boxes, labels, crowd, kept_masks = [], [], [], []
    for number, obj in enumerate(objects):
        mask = _rasterize(obj["polygon"], width, height, record, number) if masks else None
        if all(key in obj for key in BOX_KEYS):
            box = [obj["topX"] * width, obj["topY"] * height]
            box += [obj["bottomX"] * width, obj["bottomY"] * height]
        elif mask is not None:
            box = _mask_box(mask)
        else:
            box = _polygon_box(obj["polygon"], width, height)
        x0, x1 = (min(max(v, 0.0), float(width)) for v in (box[0], box[2]))
        y0, y1 = (min(max(v, 0.0), float(height)) for v in (box[1], box[3]))
        if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
            log.debug(
                "%s: object %d (%s) dropped: box %s is under %g px in a %dx%d image",
                *(record.source, number, obj["label"], box, MIN_BOX_SIDE, width, height),
            )
            continue
        boxes.append([x0, y0, x1, y1])
        labels.append(lookup(obj["label"]))
        crowd.append(int(obj.get("isCrowd", 0)))
        if mask is not None:
            kept_masks.append(torch.from_numpy(mask))
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "iscrowd": torch.tensor(crowd, dtype=torch.int64),
    }
    if masks:
        stacked = torch.stack(kept_masks) if kept_masks else torch.zeros(0, height, width)
        target["masks"] = stacked.to(torch.uint8)
    return target


class DetectionDataset(Dataset):
    """Images and targets of an object detection or instance segmentation split.

    ``dataset[i]`` is ``transform(*dataset.load(i))`` (``load`` alone without a transform); see
    the module docstring for the sample format. With the presets of
    :mod:`visionauto.data.detection_transforms` the image becomes ``f32[3, H, W]`` in [0, 1]
    (not normalized: detectors normalize and resize internally).

    With ``cache_images=True`` every image is decoded once, up front (a thread pool), and kept
    as a uint8 tensor ``[3, H, W]``; forked DataLoader workers share that memory. Targets (and
    masks, which can be large) are rebuilt on every access, never cached.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        *,
        transform: DetectionTransform | None = None,
        masks: bool = False,
        cache_images: bool = False,
    ) -> None:
        """Build the dataset; labels are parsed and checked against ``class_names`` now.

        Args:
            records: validated records (object labels, classes in ``class_names``).
            class_names: class order of the model outputs.
            transform: a v2 transform taking ``(image, target)``, e.g. from
                ``build_detection_transforms``; None returns :meth:`load`'s output.
            masks: instance segmentation: rasterize polygons into ``target["masks"]``.
            cache_images: decode all images now and keep them in memory.

        Raises:
            DataError: a label is malformed or names a class outside ``class_names``.
        """
        self.records = list(records)
        self.class_names = list(class_names)
        self.transform = transform
        self.masks = masks
        self.objects = [parse_record_objects(r, masks=masks) for r in self.records]
        for record, objects in zip(self.records, self.objects, strict=True):
            lookup = _class_lookup(self.class_names, record)
            for obj in objects:
                lookup(obj["label"])
        self._cache: list[torch.Tensor] | None = None
        if cache_images:
            workers = min(16, 2 * (os.cpu_count() or 1))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                self._cache = list(pool.map(self._decode, self.records))

    @staticmethod
    def _decode(record: ImageRecord) -> torch.Tensor:
        # A [3, H, W] view of HWC memory, as the classification cache keeps it.
        return torch.from_numpy(np.array(load_image(record.image))).permute(2, 0, 1)

    @property
    def cached(self) -> bool:
        """True when the decoded images are held in memory."""
        return self._cache is not None

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        """Image and target of record ``index`` before any transform (format: module docstring).

        Raises:
            DataError: the image cannot be decoded.
        """
        record = self.records[index]
        pixels = self._cache[index] if self._cache is not None else self._decode(record)
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        plain = build_target(
            record, self.objects[index], self.class_names, width, height, masks=self.masks
        )
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(
                plain["boxes"], format="XYXY", canvas_size=(height, width)
            ),
            "labels": plain["labels"],
            "iscrowd": plain["iscrowd"],
        }
        if self.masks:
            target["masks"] = tv_tensors.Mask(plain["masks"])
        target["image_id"] = index
        return tv_tensors.Image(pixels), target

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        image, target = self.load(index)
        if self.transform is None:
            return image, target
        return self.transform(image, target)


def _plain(value: Any) -> Any:
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def collate_detection(samples: Sequence[tuple[Any, dict[str, Any]]]) -> dict[str, list]:
    """Batch ``(image, target)`` samples into torchvision's list format.

    Args:
        samples: dataset items; images ``f32[3, Hi, Wi]`` in [0, 1] (uint8 images are scaled
            to [0, 1] here), targets as produced by :class:`DetectionDataset`.

    Returns:
        ``{"images": list[f32[3, Hi, Wi]], "targets": list[dict]}`` with plain tensors
        (``boxes`` f32[N, 4], ``labels`` i64[N], ``iscrowd`` i64[N], ``masks`` u8[N, H, W] when
        present) and ``image_id`` as an int.
    """
    images, targets = [], []
    for image, target in samples:
        image = _plain(image)
        if image.dtype == torch.uint8:
            image = image.to(torch.float32).div_(255.0)
        images.append(image)
        plain = {key: _plain(value) for key, value in target.items()}
        if isinstance(plain.get("image_id"), torch.Tensor):
            plain["image_id"] = int(plain["image_id"])
        targets.append(plain)
    return {"images": images, "targets": targets}
