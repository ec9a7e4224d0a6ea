"""image_url resolution (every form) and reading bytes from files and a loopback HTTP server."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from visionauto.data.images import load_image
from visionauto.data.records import ImageRecord
from visionauto.data.urls import MissingDatastoreRootError, read_image_bytes, resolve_image_url
from visionauto.data.validation import validate_records
from visionauto.errors import DataError


def _png_bytes(size=(20, 10), color=(10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_relative_path_is_relative_to_jsonl_folder(tmp_path: Path) -> None:
    base = tmp_path / "data" / "sub"
    assert resolve_image_url("images/a.jpg", base_dir=base, datastore_root=None) == str(
        base / "images" / "a.jpg"
    )
    assert resolve_image_url("../x/b.png", base_dir=base, datastore_root=None) == str(
        tmp_path / "data" / "x" / "b.png"
    )
    assert resolve_image_url("  c.png ", base_dir=base, datastore_root=None) == str(base / "c.png")


def test_absolute_path_and_file_url(tmp_path: Path) -> None:
    target = tmp_path / "my images" / "a.jpg"
    assert resolve_image_url(str(target), base_dir=Path("/elsewhere"), datastore_root=None) == str(
        target
    )
    assert resolve_image_url(
        target.as_uri(), base_dir=Path("/elsewhere"), datastore_root=None
    ) == str(target)
    assert "%20" in target.as_uri()
    assert resolve_image_url(
        "file:///srv/../data/b.png", base_dir=tmp_path, datastore_root=None
    ) == os.path.normpath("/data/b.png")


@pytest.mark.parametrize(
    "url",
    [
        "azureml://subscriptions/0000/resourcegroups/rg/workspaces/ws/datastores/blobstore/paths/"
        "fridge/images/1.jpg",
        "azureml://datastores/blobstore/paths/fridge/images/1.jpg",
    ],
)
def test_azureml_url_maps_onto_datastore_root(tmp_path: Path, url: str) -> None:
    root = tmp_path / "datastore"
    assert resolve_image_url(url, base_dir=Path("/x"), datastore_root=str(root)) == str(
        root / "fridge" / "images" / "1.jpg"
    )


def test_azureml_url_without_datastore_root_names_the_setting() -> None:
    url = "azureml://subscriptions/s/resourcegroups/r/workspaces/w/datastores/ds/paths/a/1.jpg"
    with pytest.raises(MissingDatastoreRootError, match=r"data\.datastore_root is not set"):
        resolve_image_url(url, base_dir=Path("/x"), datastore_root=None)


def test_azureml_url_without_paths_part() -> None:
    with pytest.raises(DataError, match="without '/datastores/<name>/paths/<path>'"):
        resolve_image_url("azureml://datastores/ds/a.jpg", base_dir=Path("/x"), datastore_root="/r")


def test_http_kept_and_unknown_scheme_rejected() -> None:
    url = "https://example.org/images/a.jpg?sig=1"
    assert resolve_image_url(url, base_dir=Path("/x"), datastore_root=None) == url
    with pytest.raises(DataError, match=r"unsupported scheme nosuchscheme://"):
        resolve_image_url("nosuchscheme://a/b.jpg", base_dir=Path("/x"), datastore_root=None)
    with pytest.raises(DataError, match="is empty"):
        resolve_image_url("  ", base_dir=Path("/x"), datastore_root=None)


def test_read_image_bytes_local_and_missing(tmp_path: Path) -> None:
    data = _png_bytes()
    (tmp_path / "a.png").write_bytes(data)
    assert read_image_bytes(str(tmp_path / "a.png")) == data
    missing = str(tmp_path / "missing.png")
    with pytest.raises(DataError, match=f"image {missing} does not exist"):
        read_image_bytes(missing)


def test_read_image_over_http(http_root: tuple[Path, str]) -> None:
    root, base_url = http_root
    data = _png_bytes(size=(20, 10))
    (root / "a.png").write_bytes(data)
    assert read_image_bytes(f"{base_url}/a.png") == data
    image = load_image(f"{base_url}/a.png")
    assert (image.mode, image.size) == ("RGB", (20, 10))
    with pytest.raises(DataError, match=f"image {base_url}/nope.png does not exist"):
        read_image_bytes(f"{base_url}/nope.png")


def test_validation_checks_http_images(http_root: tuple[Path, str]) -> None:
    root, base_url = http_root
    (root / "a.png").write_bytes(_png_bytes(size=(20, 10)))
    records = [
        ImageRecord(f"{base_url}/a.png", "can", "t.jsonl:1", width=20, height=10),
        ImageRecord(f"{base_url}/gone.png", "can", "t.jsonl:2"),
    ]
    valid, issues = validate_records(records, task="classification")
    assert [r.source for r in valid] == ["t.jsonl:1"]
    assert [(i.code, i.location) for i in issues] == [("unreadable_image", "t.jsonl:2")]
