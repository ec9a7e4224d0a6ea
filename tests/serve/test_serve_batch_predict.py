"""``python -m visionauto.predict``: folder / JSONL / MLTable inputs, errors per image, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.serve.serve_helpers import REPO, assert_probs, encode
from visionauto.packaging.predictor import load_predictor
from visionauto.predict import main as predict_main


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """b.png, a.jpg, nested/c.png, a corrupt broken.jpg and a notes.txt that is not an image."""
    root = tmp_path_factory.mktemp("photos")
    (root / "nested").mkdir()
    (root / "b.png").write_bytes(encode(Image.new("RGB", (40, 56), (200, 30, 30))))
    (root / "a.jpg").write_bytes(encode(Image.new("RGB", (50, 50), (10, 220, 10)), "JPEG"))
    (root / "nested" / "c.png").write_bytes(encode(Image.linear_gradient("L").resize((80, 60))))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("ignored")
    return root


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_input_scores_every_image_and_reports_the_broken_one(
    run_dir: Path, photo_dir: Path, tmp_path: Path, capsys
) -> None:
    output = tmp_path / "out" / "predictions.jsonl"
    code = predict_main(
        ["--model", str(run_dir), "--input", str(photo_dir), "--output", str(output),
         "--batch-size", "2", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.strip() == (
        f"scored 3 images, 1 unreadable (lines with 'error') -> {output}"
    )
    lines = read_lines(output)
    assert [line["filename"] for line in lines] == ["a.jpg", "b.png", "broken.jpg", "nested/c.png"]
    assert "cannot be decoded" in lines[2]["error"] and "broken.jpg" in lines[2]["error"]
    assert "probs" not in lines[2]
    good = [lines[i] for i in (0, 1, 3)]
    files = [photo_dir / name for name in ("a.jpg", "b.png", "nested/c.png")]
    assert_probs(good, load_predictor(run_dir).predict([f.read_bytes() for f in files]))


def test_jsonl_and_mltable_inputs_need_no_labels(
    run_dir: Path, photo_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "score.jsonl").write_text(
        json.dumps({"image_url": str(photo_dir / "a.jpg")}) + "\n"
        + "{not json\n"
        + json.dumps({"image_url": "missing.png", "label": "can"}) + "\n"
        + json.dumps({"image_url": str(photo_dir / "b.png"), "label": "can"}) + "\n"
    )  # fmt: skip
    (data / "MLTable").write_text("paths:\n  - file: ./score.jsonl\n")
    for source in (data / "score.jsonl", data):
        output = tmp_path / f"{source.name}.jsonl"
        assert predict_main(
            ["--model", str(run_dir), "--input", str(source), "--output", str(output),
             "--no-progress"]
        ) == 0  # fmt: skip
        lines = read_lines(output)
        assert [line.get("filename") for line in lines] == [
            str(photo_dir / "a.jpg"), None, str(data / "missing.png"), str(photo_dir / "b.png")
        ]  # fmt: skip
        assert lines[1]["source"] == f"{data / 'score.jsonl'}:2"
        assert lines[1]["error"].startswith("not valid JSON")
        assert lines[2]["error"] == f"image {data / 'missing.png'} does not exist."
        assert lines[2]["source"] == f"{data / 'score.jsonl'}:3"
        expected = load_predictor(run_dir).predict(
            [(photo_dir / "a.jpg").read_bytes(), (photo_dir / "b.png").read_bytes()]
        )
        assert_probs([lines[0], lines[3]], expected)


def test_settings_override_the_model_file(run_dir: Path, photo_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "p.jsonl"
    argv = ["--model", str(run_dir), "--input", str(photo_dir / "nested"), "--output", str(output)]
    assert predict_main([*argv, "--setting", "valid_crop_size=32", "--no-progress"]) == 0
    image = (photo_dir / "nested" / "c.png").read_bytes()
    expected = load_predictor(run_dir).predict([image], overrides={"valid_crop_size": 32})
    assert_probs(read_lines(output), expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{tmp}/nothing"], "--input {tmp}/nothing does not exist"),
        (["--input", "{photos}", "--model", "{tmp}/nomodel"], "no model found at {tmp}/nomodel"),
        (["--input", "{tmp}"], "holds no image files"),
        (["--input", "{photos}", "--setting", "crop"], "--setting 'crop' is invalid"),
        (["--input", "{photos}", "--setting", "crop=3"], "unknown inference setting 'crop'"),
        (["--input", "{photos}", "--batch-size", "0"], "--batch-size=0 is invalid"),
    ],
)
def test_bad_arguments_exit_with_code_2_and_a_clear_message(
    run_dir: Path, photo_dir: Path, tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    fill = {"tmp": tmp_path, "photos": photo_dir}
    argv = ["--model", str(run_dir), "--output", str(tmp_path / "o.jsonl"), "--no-progress"]
    code = predict_main(argv + [a.format(**fill) for a in args])
    assert code == 2
    assert message.format(**fill) in capsys.readouterr().err


@pytest.mark.slow
def test_module_entry_point_shows_progress(run_dir: Path, photo_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "cli.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "visionauto.predict", "--model", str(run_dir),
         "--input", str(photo_dir), "--output", str(output)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "scoring: 100%" in result.stderr and "4/4" in result.stderr
    assert len(read_lines(output)) == 4
    missing = subprocess.run(
        [sys.executable, "-m", "visionauto.predict", "--model", str(run_dir),
         "--input", str(tmp_path / "nope")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: --input")
