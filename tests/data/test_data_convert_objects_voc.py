"""``convert voc`` and ``convert masks``: real BCCD / fridge / labelme VOC files and edge cases."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionauto.data.convert import main, write_jsonl
from visionauto.data.converters import convert_voc
from visionauto.data.jsonl import load_records
from visionauto.data.polygons import polygons_to_mask
from visionauto.data.validation import validate_records

BCCD_COUNTS = {"RBC": 4153, "WBC": 372, "Platelets": 361}  # 4,155 RBC in the files, 2 zero-area
FRIDGE_COUNTS = {"can": 83, "carton": 86, "milk_bottle": 85, "water_bottle": 82}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _image(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 30)).save(path)
    return path


def _xml(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation>{body}</annotation>")
    return path


def _obj(name: str, box: tuple, difficult: str = "<difficult/>") -> str:
    tags = "".join(
        f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
    )
    return (
        f"<object><name>{name}</name><pose/><truncated/>{difficult}<bndbox>{tags}</bndbox></object>"
    )


def test_bccd_counts_and_zero_area_boxes(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bccd = shared_data / "BCCD"
    out = tmp_path / "bccd.jsonl"
    args = ["voc", "--annotations", str(bccd / "Annotations"), "--images"]
    assert main([*args, str(bccd / "JPEGImages"), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "voc: 364 images (0 without objects), 4886 objects, 3 classes",
        "  RBC        4153",
        "  WBC        372",
        "  Platelets  361",
        "skipped 2 objects:",
        "  zero-area box: 2",
        f"written to {out}",
    ]
    xmls = bccd / "Annotations"
    assert captured.err.splitlines() == [
        f"warning: {xmls / 'BloodImage_00338.xml'}: object 13 'RBC': zero-area box "
        "(504, 337, 504, 337); skipped",
        f"warning: {xmls / 'BloodImage_00343.xml'}: object 4 'RBC': zero-area box "
        "(181, 329, 181, 329); skipped",
    ]
    lines = _read(out)
    assert Counter(o["label"] for line in lines for o in line["label"]) == BCCD_COUNTS
    # Gaps in the numbering: 00025 and 00027 do not exist, so 00024 is followed by 00026.
    names = [line["image_url"].rsplit("/", 1)[1] for line in lines]
    assert names[24:26] == ["BloodImage_00024.jpg", "BloodImage_00026.jpg"]
    # <path> points at /home/pi/...: the image is found under --images by its file name.
    first = bccd / "JPEGImages" / "BloodImage_00000.jpg"
    assert lines[0]["image_url"] == Path(os.path.relpath(first, tmp_path)).as_posix()
    assert lines[0]["image_details"] == {"format": "jpg", "width": 640, "height": 480}
    assert lines[0]["label"][0] == {  # WBC 260,177,491,376 in a 640x480 image
        "label": "WBC",
        "topX": 0.40625,
        "topY": 0.36875,
        "bottomX": 0.767188,
        "bottomY": 0.783333,
        "isCrowd": 0,
    }
    records, issues = load_records(out, task="detection")
    assert issues == [] and len(records) == 364
    assert records[0].image == str(bccd / "JPEGImages" / "BloodImage_00000.jpg")
    valid, problems = validate_records(records, task="detection")
    assert problems == [] and len(valid) == 364


def test_bccd_image_set(shared_data: Path, tmp_path: Path) -> None:
    bccd = shared_data / "BCCD"
    conv = convert_voc(
        bccd / "Annotations",
        bccd / "JPEGImages",
        tmp_path / "val.jsonl",
        image_set=bccd / "ImageSets" / "Main" / "val.txt",
    )
    assert len(conv.lines) == 87


def test_fridge_voc_rebuilt_from_fairmot(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "odFridgeObjects_FairMOTformat"
    out = tmp_path / "sub" / "fridge.jsonl"
    conv = convert_voc(root / "annotations_voc_reconstructed", root / "images", out)
    assert conv.skipped == [] and conv.warnings == []
    assert len(conv.lines) == 128 and conv.class_counts() == FRIDGE_COUNTS
    # 00042.xml: milk_bottle 65,264,184,545; carton 144,308,408,508; water_bottle 337,175,428,404.
    line = conv.lines[41]
    assert line["image_url"].endswith("odFridgeObjects_FairMOTformat/images/00042.jpg")
    assert line["image_details"] == {"format": "jpg", "width": 499, "height": 666}
    assert [
        (o["label"], o["topX"], o["topY"], o["bottomX"], o["bottomY"]) for o in line["label"]
    ] == [
        (
            "milk_bottle",
            round(65 / 499, 6),
            round(264 / 666, 6),
            round(184 / 499, 6),
            round(545 / 666, 6),
        ),
        (
            "carton",
            round(144 / 499, 6),
            round(308 / 666, 6),
            round(408 / 499, 6),
            round(508 / 666, 6),
        ),
        (
            "water_bottle",
            round(337 / 499, 6),
            round(175 / 666, 6),
            round(428 / 499, 6),
            round(404 / 666, 6),
        ),
    ]


def test_labelme_voc_float_coordinates_and_empty_tags(shared_data: Path, tmp_path: Path) -> None:
    voc = shared_data / "labelme_voc2011_examples" / "bbox_detection" / "data_dataset_voc"
    conv = convert_voc(voc / "Annotations", voc / "JPEGImages", tmp_path / "x.jsonl")
    assert conv.class_counts() == {"person": 6, "bus": 2, "car": 1}
    first = conv.lines[0]  # 2011_000003.xml: person 191.0, 107.369..., 313.0, 329.369... (500x338)
    assert first["label"][0] == {
        "label": "person",
        "topX": 0.382,
        "topY": round(107.36900369003689 / 338, 6),
        "bottomX": 0.626,
        "bottomY": round(329.36900369003695 / 338, 6),
        "isCrowd": 0,
    }


def test_synthetic_quirks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Absolute <path> elsewhere, missing <filename>, Windows path, wrong or empty size."""
    images = tmp_path / "imgs"
    _image(images / "a.png", (64, 48))
    _image(images / "nested" / "b.jpg", (40, 20))
    _image(images / "c.png", (50, 50))
    ann = tmp_path / "ann"
    _xml(
        ann / "a.xml",
        "<filename>a.png</filename><path>/home/someone/data/a.png</path>"
        "<size><width>64</width><height>48</height></size>"
        + _obj("cat", (6.4, "4.8", 32, 24), "<difficult>1</difficult>")
        + _obj("cat", (10, 10, 5, 20))
        + "<object><name></name></object>"
        + _obj("dog", (60, 40, 70, 50)),
    )
    # Windows path in <path>, no <filename>, <size> in the wrong (pre-resize) frame: 80x40.
    _xml(
        ann / "b.xml",
        r"<path>C:\Users\me\b.jpg</path><size><width>80</width><height>40</height></size>"
        + _obj("dog", (0, 0, 80, 40)),
    )
    # No <filename>/<path> at all and an empty <size>: the XML's stem finds c.png.
    _xml(ann / "c.xml", "<size><width/><height/></size>")
    out = tmp_path / "out.jsonl"
    assert (
        main(["voc", "--annotations", str(ann), "--images", str(images), "--output", str(out)]) == 0
    )
    a, b, c = _read(out)
    assert a["image_url"] == "imgs/a.png" and b["image_url"] == "imgs/nested/b.jpg"
    assert a["label"] == [
        {"label": "cat", "topX": 0.1, "topY": 0.1, "bottomX": 0.5, "bottomY": 0.5, "isCrowd": 1},
        {
            "label": "dog",
            "topX": 0.9375,
            "topY": 0.833333,
            "bottomX": 1.0,
            "bottomY": 1.0,
            "isCrowd": 0,
        },
    ]
    # Boxes fit 80x40 but not the real 40x20: normalized by the annotation's frame.
    assert b["image_details"] == {"format": "jpg", "width": 40, "height": 20}
    assert b["label"][0] == {
        "label": "dog",
        "topX": 0.0,
        "topY": 0.0,
        "bottomX": 1.0,
        "bottomY": 1.0,
        "isCrowd": 0,
    }
    assert c["label"] == [] and c["image_details"]["width"] == 50
    captured = capsys.readouterr()
    assert (
        f"{ann / 'a.xml'}: object 2 'cat': inverted box (max < min) (10, 10, 5, 20); skipped"
        in captured.err
    )
    assert f"{ann / 'a.xml'}: object 3: no <name>; skipped" in captured.err
    assert (
        "the annotation says 80x40 but b.jpg is 40x20; coordinates normalized by the annotation's size"
        in captured.err
    )
    assert "clipped 1 objects that reached past the image border" in captured.out


def _instance_masks(tmp_path: Path) -> tuple[Path, Path, Path, np.ndarray]:
    """A 40x30 image with a ring (value 1, with a hole), a square (value 2) and void 255."""
    images, masks = tmp_path / "JPEGImages", tmp_path / "SegmentationObject"
    _image(images / "x.png", (40, 30))
    values = np.zeros((30, 40), dtype=np.uint8)
    values[2:22, 2:22] = 1
    values[8:14, 8:14] = 0  # the hole
    values[20:28, 28:38] = 2
    values[19:29, 27:39][values[19:29, 27:39] == 0] = 255  # VOC's void border around object 2
    masks.mkdir()
    palette = Image.fromarray(values, mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 252 + [224, 224, 192])
    palette.save(masks / "x.png")
    xml = _xml(
        tmp_path / "Annotations" / "x.xml",
        "<filename>x.png</filename><size><width>40</width><height>30</height></size>"
        + _obj("ring", (3, 3, 22, 22))
        + _obj("box", (0, 0, 0, 0))  # zero-area in the XML: the mask's extent is used
        + _obj("ghost", (1, 1, 2, 2)),  # no pixels of value 3
    )
    return xml.parent, images, masks, values


def test_voc_masks_polygons_with_hole(tmp_path: Path) -> None:
    ann, images, masks, values = _instance_masks(tmp_path)
    conv = convert_voc(ann, images, tmp_path / "seg.jsonl", masks=masks, max_points=12)
    assert [(s.location, s.reason) for s in conv.skipped] == [
        (f"{masks / 'x.png'}: object 3 'ghost'", "no pixels in the mask")
    ]
    ring, box = conv.lines[0]["label"]
    assert (ring["label"], box["label"]) == ("ring", "box")
    assert (ring["topX"], ring["bottomX"]) == (0.075, 0.55)  # from the XML: 3/40, 22/40
    assert (box["topX"], box["topY"], box["bottomX"], box["bottomY"]) == (
        0.7,
        0.666667,
        0.95,
        0.933333,
    )
    assert all(len(segment) // 2 <= 12 for segment in ring["polygon"])
    drawn = polygons_to_mask(ring["polygon"], 40, 30)
    assert not drawn[10, 10]  # the hole stays empty
    assert (drawn == (values == 1)).mean() > 0.97
    assert (polygons_to_mask(box["polygon"], 40, 30) == (values == 2)).all()
    out = tmp_path / "seg.jsonl"
    write_jsonl(conv.lines, out)
    records, issues = load_records(out, task="instance_segmentation")
    assert issues == []
    assert validate_records(records, task="instance_segmentation")[1] == []


def test_labelme_voc_masks_without_xml(shared_data: Path, tmp_path: Path) -> None:
    voc = shared_data / "labelme_voc2011_examples" / "instance_segmentation" / "data_dataset_voc"
    out = tmp_path / "masks.jsonl"
    args = ["masks", "--masks", str(voc / "SegmentationObject"), "--class-masks"]
    args += [str(voc / "SegmentationClass"), "--classes", str(voc / "class_names.txt")]
    assert main([*args, "--images", str(voc / "JPEGImages"), "--output", str(out)]) == 0
    lines = _read(out)
    labels = [[o["label"] for o in line["label"]] for line in lines]
    # 2011_000006 has instance values 1-5 and 7 (6 was labelme's __ignore__ region).
    assert labels == [
        ["person", "person", "bottle"],
        ["person", "person", "person", "chair", "person", "sofa"],
        ["bus", "bus", "car"],
    ]
    assert all(len(s) // 2 <= 100 for line in lines for o in line["label"] for s in o["polygon"])
    # The first person of 2011_000003: the mask spans columns 191..313, rows 107..328.
    first = lines[0]["label"][0]
    assert (first["topX"], first["topY"], first["bottomX"]) == (0.382, round(107 / 338, 6), 0.628)
    records, issues = load_records(out, task="instance_segmentation")
    assert issues == [] and len(records) == 3


@pytest.mark.parametrize("case", ["bad_xml", "missing_image", "mask_size", "not_voc", "no_xml"])
def test_bad_voc_input_exits_2(tmp_path: Path, case: str, capsys: pytest.CaptureFixture) -> None:
    images, ann = tmp_path / "imgs", tmp_path / "ann"
    _image(images / "a.png", (20, 10))
    ann.mkdir()
    extra: list[str] = []
    if case == "bad_xml":
        (ann / "a.xml").write_text("<annotation><object>")
        expected = f"{ann / 'a.xml'}: not valid XML"
    elif case == "missing_image":
        _xml(ann / "gone.xml", "<filename>gone.jpg</filename>")
        expected = f"no image for 'gone.jpg', 'gone' under --images {images}"
    elif case == "mask_size":
        _xml(ann / "a.xml", _obj("cat", (1, 1, 5, 5)))
        (tmp_path / "m").mkdir()
        Image.new("L", (5, 5)).save(tmp_path / "m" / "a.png")
        extra = ["--masks", str(tmp_path / "m")]
        expected = "is 5x5 but its image is 20x10: masks must have the image's size"
    elif case == "not_voc":
        (ann / "a.xml").write_text("<html/>")
        expected = "the root element is <html>, not <annotation>"
    else:
        expected = f"no .xml files in --annotations {ann}"
    out = tmp_path / "o.jsonl"
    args = ["voc", "--annotations", str(ann), "--images", str(images), *extra]
    assert main([*args, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err, err
    assert not out.exists()
