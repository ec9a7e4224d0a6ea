"""Detector outputs -> Azure response entries (boxes, polygons, optional mask images)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from visionauto.data.polygons import polygons_to_mask
from visionauto.errors import ConfigError, ModelError
from visionauto.packaging.segmentation_output import boxes_to_response, masks_to_response

CLASSES = ["can", "carton", "milk_bottle"]
W, H = 40, 20


def _outputs() -> dict[str, torch.Tensor]:
    """Two detections in a 40x20 image, the better one second (to test the ordering)."""
    masks = torch.zeros(2, 1, H, W)
    masks[0, 0, 2:6, 4:12] = 0.7  # 8x4 block
    masks[0, 0, 10:12, 30:32] = 0.4  # below the 0.5 threshold: not part of the object
    masks[1, 0, 5:15, 20:40] = 0.9  # touches the right border
    return {
        "masks": masks,
        "boxes": torch.tensor([[4.0, 2.0, 12.0, 6.0], [20.0, 5.0, 40.0, 15.0]]),
        "scores": torch.tensor([0.612345678, 0.9]),
        "labels": torch.tensor([2, 0]),
    }


def test_boxes_are_normalized_rounded_sorted_and_clipped() -> None:
    boxes = torch.tensor([[4.0, 2.0, 12.0, 6.0], [-3.0, 1.0 / 3.0, 41.0, 20.0]])
    entries = boxes_to_response(
        boxes, torch.tensor([0.2, 0.98765432]), torch.tensor([1, 0]), CLASSES, width=W, height=H
    )
    assert entries == [
        {
            "box": {"topX": 0.0, "topY": 0.01667, "bottomX": 1.0, "bottomY": 1.0},
            "label": "can",
            "score": 0.98765,
        },
        {
            "box": {"topX": 0.1, "topY": 0.1, "bottomX": 0.3, "bottomY": 0.3},
            "label": "carton",
            "score": 0.2,
        },
    ]
    empty = boxes_to_response(
        torch.zeros(0, 4),
        torch.zeros(0),
        torch.zeros(0, dtype=torch.int64),
        CLASSES,
        width=W,
        height=H,
    )
    assert empty == []


def test_an_unknown_class_index_is_a_model_error() -> None:
    with pytest.raises(ModelError, match=r"predicted class index \[3\] but has 3 class name"):
        boxes_to_response(
            np.array([[0, 0, 1, 1]]), np.array([0.5]), np.array([3]), CLASSES, width=W, height=H
        )


def test_masks_become_polygons_with_the_box_entries() -> None:
    out = _outputs()
    entries = masks_to_response(
        out["masks"], out["boxes"], out["scores"], out["labels"], CLASSES, width=W, height=H
    )
    assert [list(e) for e in entries] == [["box", "label", "score", "polygon"]] * 2
    assert [(e["label"], e["score"]) for e in entries] == [("can", 0.9), ("milk_bottle", 0.61235)]
    assert entries[0]["box"] == {"topX": 0.5, "topY": 0.25, "bottomX": 1.0, "bottomY": 0.75}
    for entry, index in zip(entries, (1, 0), strict=True):
        polygons = entry["polygon"]
        assert len(polygons) == 1  # the 0.4 blob was thresholded away
        assert all(0.0 <= v <= 1.0 and round(v, 5) == v for v in polygons[0])
        expected = out["masks"][index, 0].numpy() > 0.5
        np.testing.assert_array_equal(polygons_to_mask(polygons, W, H), expected)
    assert max(entries[0]["polygon"][0][0::2]) == 1.0  # reaches the right border


def test_threshold_point_limit_and_bool_masks() -> None:
    out = _outputs()
    entries = masks_to_response(
        out["masks"],
        out["boxes"],
        out["scores"],
        out["labels"],
        CLASSES,
        width=W,
        height=H,
        mask_pixel_score_threshold=0.3,
    )
    assert len(entries[1]["polygon"]) == 2  # the 0.4 blob now counts
    yy, xx = np.mgrid[:H, :W]
    disc = ((xx - 20) ** 2 + (yy - 10) ** 2 < 9**2)[None]  # bool[1, H, W]
    entries = masks_to_response(
        disc,
        np.array([[11, 1, 29, 19]]),
        np.array([0.5]),
        np.array([1]),
        CLASSES,
        width=W,
        height=H,
        max_number_of_polygon_points=6,
    )
    assert 3 <= len(entries[0]["polygon"][0]) // 2 <= 6
    empty = masks_to_response(
        np.zeros((1, H, W), dtype=bool),
        np.array([[0, 0, 4, 4]]),
        np.array([0.5]),
        np.array([1]),
        CLASSES,
        width=W,
        height=H,
    )
    assert empty[0]["polygon"] == []


@pytest.mark.parametrize(
    ("image_type", "pil_format"), [("JPG", "JPEG"), ("png", "PNG"), ("BMP", "BMP")]
)
def test_export_as_image_adds_a_base64_mask(image_type: str, pil_format: str) -> None:
    out = _outputs()
    entries = masks_to_response(
        out["masks"],
        out["boxes"],
        out["scores"],
        out["labels"],
        CLASSES,
        width=W,
        height=H,
        export_as_image=True,
        image_type=image_type,
    )
    assert list(entries[0]) == ["box", "label", "score", "polygon", "mask"]
    image = Image.open(io.BytesIO(base64.b64decode(entries[1]["mask"])))
    assert image.format == pil_format and image.size == (W, H) and image.mode == "L"
    pixels = np.asarray(image) > 127
    np.testing.assert_array_equal(pixels, out["masks"][0, 0].numpy() > 0.5)


def test_an_invalid_image_type_is_a_config_error() -> None:
    out = _outputs()
    with pytest.raises(ConfigError, match="image_type='GIF' is invalid: expected JPG, PNG or BMP"):
        masks_to_response(
            out["masks"],
            out["boxes"],
            out["scores"],
            out["labels"],
            CLASSES,
            width=W,
            height=H,
            export_as_image=True,
            image_type="GIF",
        )
