"""YOLO-style augmentations (spec §1.8): mosaic, random affine, horizontal flip; letterbox.

Samples are ``(image, target)`` pairs as :meth:`DetectionDataset.load` returns them (image
``tv_tensors.Image`` u8[3, H, W], target with ``boxes`` XYXY pixels, ``labels``, ``iscrowd``,
``image_id``). Boxes move with the pixels through every step.

- :func:`letterbox`: resize so the long side is ``size`` (aspect kept), pad to ``size x size``
  with gray 114 centred; :func:`unletterbox_boxes` maps boxes back exactly.
- :class:`MosaicDataset`: four images in one sample (YOLOv4, Bochkovskiy et al., 2020). Design:
  each of the four images is letterbox-scaled (long side ``img_size``, native network scale) and
  placed in one quadrant around a random junction point of a ``2 img_size`` canvas, whose
  central ``img_size x img_size`` window is the output (equivalently: the junction is uniform
  in the middle 60% of the output and each image fills its quadrant from the junction outwards).
  Boxes are clipped to their quadrant; a box keeps its label only while at least 20% of its
  area stays visible, so a bottle cut to a sliver is not taught as a bottle.
- :func:`build_yolo_train_transform`: letterbox to ``img_size``, then random affine (translate,
  scale; rotation and shear off by default, spec §1.4) and horizontal flip, then float and
  ``SanitizeBoundingBoxes``. ``augment=False`` (``apply_automl_train_augmentations: false``)
  keeps only letterbox, float and sanitize. Mosaic is the dataset wrapper, switched separately
  (``apply_mosaic_for_yolo``).

Masks are not carried (YOLO is a box detector); a mosaic sample has no ``masks``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, get_worker_info
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from visionauto.data.detection_transforms import PER_OBJECT_KEYS, per_object_tensors

PAD_VALUE = 114  # gray padding (uint8); 114 / 255 for float images
MIN_VISIBLE_FRACTION = 0.2
_JUNCTION_RANGE = (0.2, 0.8)
_TILE_CACHE_BYTES = 512 * 2**20
Sample = tuple[Any, dict[str, Any]]


@dataclass(frozen=True)
class LetterboxInfo:
    """How :func:`letterbox` moved pixels: ``x' = x * scale_x + pad_x`` (same for y)."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    height: int  # of the input image
    width: int


def letterbox_info(height: int, width: int, size: int) -> LetterboxInfo:
    """The letterbox geometry of a ``height x width`` image into a ``size x size`` square."""
    ratio = size / max(height, width)
    new_h, new_w = max(1, round(height * ratio)), max(1, round(width * ratio))
    return LetterboxInfo(
        scale_x=new_w / width,
        scale_y=new_h / height,
        pad_x=(size - new_w) // 2,
        pad_y=(size - new_h) // 2,
        height=height,
        width=width,
    )


def letterbox(
    image: torch.Tensor, target: dict[str, Any] | None, size: int
) -> tuple[torch.Tensor, dict[str, Any] | None, LetterboxInfo]:
    """Resize (aspect kept, long side ``size``) and pad to a centred ``size x size`` square.

    Args:
        image: u8 or f32 ``[3, H, W]`` (a ``tv_tensors.Image`` stays one).
        target: optional target dict; its ``boxes`` (XYXY pixels) are moved with the image.
        size: output side in pixels.

    Returns:
        ``(image [3, size, size], target or None, info)``; padding is 114 (u8) or 114/255.
    """
    height, width = int(image.shape[-2]), int(image.shape[-1])
    info = letterbox_info(height, width, size)
    new_h, new_w = round(height * info.scale_y), round(width * info.scale_x)
    plain = image.as_subclass(torch.Tensor)
    if (new_h, new_w) == (height, width) and (new_h, new_w) == (size, size):
        out = plain
    else:
        resized = plain
        if (new_h, new_w) != (height, width):
            resized = TF.resize(plain, [new_h, new_w], antialias=True)
        fill = PAD_VALUE if image.dtype == torch.uint8 else PAD_VALUE / 255.0
        out = plain.new_full((plain.shape[0], size, size), fill)
        out[:, info.pad_y : info.pad_y + new_h, info.pad_x : info.pad_x + new_w] = resized
    if isinstance(image, tv_tensors.Image):
        out = tv_tensors.Image(out)
    if target is not None and "boxes" in target:
        target = dict(target)
        target["boxes"] = _move_boxes(target["boxes"], info, (size, size))
    return out, target, info


def _move_boxes(boxes: torch.Tensor, info: LetterboxInfo, canvas: tuple[int, int]) -> Any:
    plain = boxes.as_subclass(torch.Tensor).to(torch.float32)
    scale = plain.new_tensor((info.scale_x, info.scale_y, info.scale_x, info.scale_y))
    shift = plain.new_tensor((info.pad_x, info.pad_y, info.pad_x, info.pad_y))
    moved = plain * scale + shift
    if isinstance(boxes, tv_tensors.BoundingBoxes):
        return tv_tensors.BoundingBoxes(moved, format=boxes.format, canvas_size=canvas)
    return moved


def unletterbox_boxes(boxes: torch.Tensor, info: LetterboxInfo) -> torch.Tensor:
    """Map XYXY boxes from letterboxed pixels back to the input image, clipped to it.

    Args:
        boxes: f32[K, 4] XYXY in the ``size x size`` letterboxed frame.
        info: the geometry :func:`letterbox` returned.

    Returns:
        f32[K, 4] XYXY in pixels of the original ``info.height x info.width`` image.
    """
    shift = boxes.new_tensor((info.pad_x, info.pad_y, info.pad_x, info.pad_y))
    scale = boxes.new_tensor((info.scale_x, info.scale_y, info.scale_x, info.scale_y))
    out = (boxes - shift) / scale
    out[:, 0::2] = out[:, 0::2].clamp(0, info.width)
    out[:, 1::2] = out[:, 1::2].clamp(0, info.height)
    return out


class Letterbox:
    """A ``(image, target)`` transform wrapping :func:`letterbox` (fits in ``v2.Compose``)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        image, target, _ = letterbox(image, target, self.size)
        return image, target  # type: ignore[return-value]


class RandomZoomShift:
    """Random scale about the centre and shift, on a same-size gray canvas (an axis-aligned
    random affine done as one resize and one paste: ~10x cheaper than resampling a grid).

    ``x' = s * x + o`` with ``s`` uniform in ``scale_range`` (the rounded size's exact ratio per
    axis) and ``o`` centring the scaled image, then shifting it by up to ``translate`` of the
    side. Boxes are clipped to the frame; those with under 20% of their area left are removed
    together with their ``labels`` / ``iscrowd``.
    """

    def __init__(self, scale_range: tuple[float, float], translate: float) -> None:
        self.scale_range = scale_range
        self.translate = translate

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        height, width = int(image.shape[-2]), int(image.shape[-1])
        low, high = self.scale_range
        draws = torch.rand(3).tolist()
        scale = low + (high - low) * draws[0]
        shift_x = (2 * draws[1] - 1) * self.translate * width
        shift_y = (2 * draws[2] - 1) * self.translate * height
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        plain = image.as_subclass(torch.Tensor)
        resized = TF.resize(plain, [new_h, new_w], antialias=True)
        ox = round((width - new_w) / 2 + shift_x)
        oy = round((height - new_h) / 2 + shift_y)
        fill = PAD_VALUE if plain.dtype == torch.uint8 else PAD_VALUE / 255.0
        canvas = plain.new_full(plain.shape, fill)
        x0, y0 = max(0, ox), max(0, oy)
        x1, y1 = min(width, ox + new_w), min(height, oy + new_h)
        if x1 > x0 and y1 > y0:
            canvas[:, y0:y1, x0:x1] = resized[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        boxes = target["boxes"].as_subclass(torch.Tensor).to(torch.float32).reshape(-1, 4)
        ratio = boxes.new_tensor((new_w / width, new_h / height) * 2)
        moved = boxes * ratio + boxes.new_tensor((ox, oy, ox, oy))
        kept = _clip_boxes(moved, (0, 0, width, height))
        assert kept is not None  # the frame itself is never empty
        out = {
            **target,
            "boxes": tv_tensors.BoundingBoxes(kept[0], format="XYXY", canvas_size=(height, width)),
        }
        for key in PER_OBJECT_KEYS:
            if isinstance(target.get(key), torch.Tensor):
                out[key] = target[key][kept[1]]
        return tv_tensors.Image(canvas), out


def build_yolo_train_transform(
    img_size: int,
    *,
    augment: bool,
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    shear: float = 0.0,
) -> v2.Compose:
    """The YOLO training pipeline applied after the (optional) mosaic.

    Args:
        img_size: letterbox size; the affine and flip then work on the network-sized image.
        augment: random affine + horizontal flip (False: letterbox, float, sanitize only).
        degrees: max rotation in degrees (boxes become the rotated corners' enclosing box).
        translate: max shift as a fraction of the side.
        scale: zoom range ``1 ± scale``.
        shear: max shear in degrees.

    Returns:
        A transform ``(u8 image [3, H, W], target) -> (f32 image [3, S, S] in [0, 1], target)``;
        boxes pushed out of the frame (or thinner than 1 px) are removed with their labels
        and crowd flags.
    """
    steps: list[Callable[..., Any]] = [Letterbox(img_size)]
    scale_range = (max(0.05, 1.0 - scale), 1.0 + scale)
    if augment and degrees == 0 and shear == 0:
        steps += [RandomZoomShift(scale_range, translate), v2.RandomHorizontalFlip(p=0.5)]
    elif augment:
        steps += [
            v2.RandomAffine(
                degrees=degrees,
                translate=(translate, translate) if translate > 0 else None,
                scale=scale_range,
                shear=shear if shear > 0 else None,
                fill={tv_tensors.Image: PAD_VALUE, "others": 0},
            ),
            v2.RandomHorizontalFlip(p=0.5),
        ]
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.SanitizeBoundingBoxes(labels_getter=per_object_tensors),
    ]
    return v2.Compose(steps)


class MosaicDataset(Dataset):
    """Wraps a dataset with ``load(i)`` / ``__len__`` into 4-image mosaic samples.

    ``dataset[i]`` is ``transform(*load(i))``; :meth:`load` returns a mosaic (probability ``p``)
    of image ``i`` and three random others as ``(u8 [3, S, S], target)``, or image ``i`` alone
    (unchanged) otherwise. Randomness: a generator seeded with ``seed`` in the main process and
    with the DataLoader's per-worker, per-epoch seed inside workers (so workers differ and
    epochs differ, yet ``torch.manual_seed`` makes a run reproducible).

    ``p`` lives in shared memory: setting it in the main process (e.g. to 0 for the last
    epochs, see :class:`visionauto.trial.callbacks.MosaicSchedule`) reaches persistent loader
    workers too, forked or spawned.
    """

    def __init__(
        self,
        base: Any,
        img_size: int,
        *,
        p: float = 1.0,
        seed: int = 0,
        transform: Callable[..., Sample] | None = None,
        cache_tiles: bool | None = None,
    ) -> None:
        """Args:
        base: a dataset with ``load(i) -> (image u8[3,H,W], target)`` and ``__len__``.
        img_size: output side ``S`` in pixels.
        p: probability of a mosaic (else the sample of ``base.load(i)`` as is).
        seed: seed of the main-process generator.
        transform: applied to every sample after the mosaic; None: ``base.transform`` (the
            base's own transform is never applied by the base itself: :meth:`load` reads
            ``base.load``), so a base built with the YOLO train transform can be wrapped as is.
        cache_tiles: keep each image resized to long side ``S`` after first use (saves the
            resizes, ~40% of a mosaic's cost). None: on when ``base.cached`` (its images are
            in memory anyway) and the tiles take at most 512 MiB (per DataLoader worker).
        """
        self.base = base
        self.img_size = img_size
        self._p = torch.tensor([float(p)]).share_memory_()
        self.seed = seed
        self.transform = transform if transform is not None else getattr(base, "transform", None)
        if cache_tiles is None:
            tiles_bytes = len(base) * 3 * img_size * img_size
            cache_tiles = bool(getattr(base, "cached", False)) and tiles_bytes <= _TILE_CACHE_BYTES
        self._tiles: dict[int, tuple[torch.Tensor, torch.Tensor, dict[str, Any]]] | None = (
            {} if cache_tiles else None
        )
        self._generator: torch.Generator | None = None
        self._generator_key: int | None = None

    @property
    def p(self) -> float:
        """Probability that a sample is a mosaic."""
        return float(self._p[0])

    @p.setter
    def p(self, value: float) -> None:
        self._p[0] = float(value)

    def __len__(self) -> int:
        return len(self.base)

    def _rng(self) -> torch.Generator:
        worker = get_worker_info()
        key = self.seed if worker is None else worker.seed
        if self._generator is None or self._generator_key != key:
            self._generator = torch.Generator().manual_seed(key)
            self._generator_key = key
        return self._generator

    def __getitem__(self, index: int) -> Sample:
        image, target = self.load(index)
        if self.transform is None:
            return image, target
        return self.transform(image, target)

    def load(self, index: int) -> Sample:
        """The sample before ``transform``: a mosaic around image ``index`` or the image alone."""
        rng = self._rng()
        p = self.p
        if p < 1.0 and float(torch.rand(1, generator=rng)) >= p:
            return self.base.load(index)
        others = torch.randint(len(self.base), (3,), generator=rng).tolist()
        low, high = _JUNCTION_RANGE
        junction = low + (high - low) * torch.rand(2, generator=rng)
        xc, yc = (int(v * self.img_size) for v in junction.tolist())
        return self._compose([index, *others], xc, yc)

    def _tile(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Image ``index`` resized to long side ``S``, its boxes in that frame, its target."""
        if self._tiles is not None and index in self._tiles:
            return self._tiles[index]
        image, target = self.base.load(index)
        tile, moved, _ = letterbox_tile(image, target, self.img_size)
        entry = (tile, moved, target)
        if self._tiles is not None:
            self._tiles[index] = entry
        return entry

    def _compose(self, indices: list[int], xc: int, yc: int) -> Sample:
        size = self.img_size
        canvas = torch.full((3, size, size), PAD_VALUE, dtype=torch.uint8)
        quadrants = ((0, 0, xc, yc), (xc, 0, size, yc), (0, yc, xc, size), (xc, yc, size, size))
        boxes, labels, crowd = [], [], []
        first_id: Any = indices[0]
        for quadrant, index in enumerate(indices):
            tile, moved, target = self._tile(index)
            if quadrant == 0:
                first_id = target.get("image_id", index)
            h, w = tile.shape[-2:]
            # Tile corner touching the junction: top-left tile ends at it, bottom-right starts.
            ox = xc - w if quadrant in (0, 2) else xc
            oy = yc - h if quadrant in (0, 1) else yc
            x0, y0, x1, y1 = quadrants[quadrant]
            vx0, vy0, vx1, vy1 = max(x0, ox), max(y0, oy), min(x1, ox + w), min(y1, oy + h)
            if vx1 > vx0 and vy1 > vy0:
                canvas[:, vy0:vy1, vx0:vx1] = tile[:, vy0 - oy : vy1 - oy, vx0 - ox : vx1 - ox]
            kept = _clip_boxes(moved + moved.new_tensor((ox, oy, ox, oy)), (vx0, vy0, vx1, vy1))
            boxes.append(moved.new_zeros(0, 4) if kept is None else kept[0])
            labels.append(target["labels"][kept[1]] if kept is not None else target["labels"][:0])
            crowd_flags = target.get("iscrowd", torch.zeros_like(target["labels"]))
            crowd.append(crowd_flags[kept[1]] if kept is not None else crowd_flags[:0])
        out_target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.cat(boxes), format="XYXY", canvas_size=(size, size)
            ),
            "labels": torch.cat(labels),
            "iscrowd": torch.cat(crowd),
            "image_id": first_id,
        }
        return tv_tensors.Image(canvas), out_target


def letterbox_tile(
    image: torch.Tensor, target: dict[str, Any], size: int
) -> tuple[torch.Tensor, torch.Tensor, LetterboxInfo]:
    """Resize an image so its long side is ``size`` (no padding); boxes follow.

    Returns:
        ``(u8 [3, h, w], boxes f32[N, 4] XYXY in the resized image, info)``.
    """
    height, width = int(image.shape[-2]), int(image.shape[-1])
    info = letterbox_info(height, width, size)
    new_h, new_w = round(height * info.scale_y), round(width * info.scale_x)
    plain = image.as_subclass(torch.Tensor)
    if (new_h, new_w) != (height, width):
        plain = TF.resize(plain, [new_h, new_w], antialias=True)
    boxes = target["boxes"].as_subclass(torch.Tensor).to(torch.float32).reshape(-1, 4)
    scale = boxes.new_tensor((info.scale_x, info.scale_y, info.scale_x, info.scale_y))
    return plain, boxes * scale, info


def _clip_boxes(
    boxes: torch.Tensor, window: tuple[int, int, int, int]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Clip XYXY boxes to a window; keep those with >= 20% of their area and >= 2 px sides.

    Returns:
        ``(clipped boxes f32[K, 4], kept indices i64[K])`` or None when the window is empty.
    """
    x0, y0, x1, y1 = window
    if x1 <= x0 or y1 <= y0:
        return None
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(x0, x1)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(y0, y1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    sides = clipped[:, 2:] - clipped[:, :2]
    visible = sides[:, 0] * sides[:, 1]
    keep = (sides.min(dim=1).values >= 2.0) & (visible >= MIN_VISIBLE_FRACTION * area)
    kept = keep.nonzero(as_tuple=True)[0]
    return clipped[kept], kept
