"""``python -m visionauto.explain``: files written per image (and per class), progress, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionauto.explain.__main__ import main
from visionauto.models.registry import create_model
from visionauto.packaging.pyfunc import save_model
from visionauto.packaging.settings import build_settings

CLASS_NAMES = ["can", "carton", "milk bottle"]
CROP = 40


def save_tiny_model(root: Path, task: str, name: str = "test_resnet", **kw) -> Path:  # noqa: ANN003
    torch.manual_seed(0)
    model = create_model(task, name, num_classes=len(CLASS_NAMES), **kw).eval()
    settings = build_settings(
        task=task,
        model_name=name,
        class_names=CLASS_NAMES,
        inference={"valid_resize_size": 48, "valid_crop_size": CROP},
        model_kwargs=kw,
    )
    return save_model(root / "model", state_dict=model.state_dict(), settings=settings)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "classification": save_tiny_model(root / "mc", "classification"),
        "multilabel": save_tiny_model(root / "ml", "multilabel"),
        "vit": save_tiny_model(root / "vit", "classification", "test_vit", img_size=CROP),
    }


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for path in (folder / "a.png", folder / "sub" / "b.jpg"):
        pixels = rng.integers(0, 255, size=(50, 60, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def test_writes_a_figure_and_attributions_per_image(
    models: dict[str, Path], image_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    code = main(
        ["--model", str(models["classification"]), "--images", str(image_dir),
         "--algorithm", "guided_backprop", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"[1/3] {image_dir / 'a.png'}: ")
    assert printed[1].startswith(f"[2/3] {image_dir / 'broken.png'}: error: image ")
    assert printed[2].startswith(f"[3/3] {image_dir / 'sub' / 'b.jpg'}: ")
    assert printed[-1] == f"explained 2 images, 1 unreadable (lines with 'error') -> {out}"
    for name in ("a", "sub/b"):
        assert np.load(out / f"{name}.npy").shape == (3, CROP, CROP)
        assert Image.open(out / f"{name}.png").size == (2 * CROP, 2 * CROP)
    lines = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    assert [Path(line["filename"]).name for line in lines] == ["a.png", "broken.png", "b.jpg"]
    assert lines[1]["error"].startswith(f"image {image_dir / 'broken.png'} cannot be decoded")
    assert lines[0]["labels"] == CLASS_NAMES and len(lines[0]["explained"]) == 1
    assert lines[0]["explained"][0]["npy"] == str(out / "a.npy")


def test_multilabel_writes_one_pair_of_files_per_class_above_the_threshold(
    models: dict[str, Path], image_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code = main(
        ["--model", str(models["multilabel"]), "--images", str(image_dir / "a.png"),
         "--algorithm", "integrated_gradients", "--n-steps", "4", "--threshold", "0",
         "--approximation-method", "gausslegendre", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "a_can.npy", "a_can.png", "a_carton.npy", "a_carton.png",
        "a_milk_bottle.npy", "a_milk_bottle.png", "explanations.jsonl",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-steps", "1"], "error: n_steps=1 is invalid: expected a whole number >= 2"),
        (["--algorithm", "lime"], "error: xai_algorithm='lime' is unknown: use one of xrai"),
        (["--approximation-method", "x"], "error: approximation_method='x' is unknown"),
    ],
)
def test_bad_parameters_exit_with_code_2_and_one_line(
    models: dict[str, Path], image_dir: Path, tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    code = main(
        ["--model", str(models["classification"]), "--images", str(image_dir),
         "--out", str(tmp_path / "out"), *args]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_bad_inputs_and_models_exit_with_code_2(
    models: dict[str, Path], image_dir: Path, tmp_path: Path, capsys
) -> None:
    out = str(tmp_path / "out")
    assert (
        main(["--model", str(models["classification"]), "--images", "nowhere", "--out", out]) == 2
    )
    assert "--images nowhere does not exist" in capsys.readouterr().err
    assert main(["--model", str(tmp_path), "--images", str(image_dir), "--out", out]) == 2
    assert "no model found at" in capsys.readouterr().err
    vit = ["--model", str(models["vit"]), "--images", str(image_dir), "--out", out]
    assert main([*vit, "--algorithm", "guided_gradcam"]) == 2
    assert "Use xai_algorithm='xrai' or 'integrated_gradients'" in capsys.readouterr().err
    twice = ["--images", str(image_dir / "a.png"), str(image_dir / "a.png")]
    assert main(["--model", str(models["classification"]), *twice, "--out", out]) == 2
    assert "would both write a.png" in capsys.readouterr().err
