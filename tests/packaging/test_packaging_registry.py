"""MLflow model registry: register run/model folders with aliases, load ``models:/`` refs back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visionauto.errors import ConfigError, ModelError
from visionauto.model import main as model_main
from visionauto.packaging.predictor import load_predictor
from visionauto.packaging.registry import (
    is_registry_ref,
    register_model,
    registry_uri,
    resolve_version,
)
from visionauto.tracking.mlflow_tracking import default_tracking_uri


@pytest.fixture(scope="module")
def registry(classification_model, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A fresh SQLite registry with ``tiny`` v1 (alias champion) from the run folder."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    model_dir, _ = classification_model
    version = register_model(model_dir.parent, name="tiny", alias="champion", tracking_uri=uri)
    return {"uri": uri, "model_dir": model_dir, "v1": version}


def probs(predictor, images: list[bytes]) -> np.ndarray:  # noqa: ANN001
    return np.array([row["probs"] for row in predictor.predict(images)])


def test_register_returns_the_version_and_its_ref(registry: dict) -> None:
    v1 = registry["v1"]
    assert (v1.name, v1.version, v1.alias) == ("tiny", 1, "champion")
    assert v1.ref == "models:/tiny@champion"
    assert v1.model_dir == registry["model_dir"]  # found through the run folder's model/
    assert v1.tracking_uri == registry["uri"]
    assert Path(v1.source.removeprefix("file://")).joinpath("MLmodel").is_file()


def test_alias_version_and_latest_load_the_same_model(registry: dict, image_bytes) -> None:
    expected = probs(load_predictor(registry["model_dir"]), image_bytes)
    for ref in ("models:/tiny@champion", "models:/tiny/1", "models:/tiny/latest"):
        predictor = load_predictor(ref, tracking_uri=registry["uri"])
        np.testing.assert_allclose(probs(predictor, image_bytes), expected, atol=1e-6, rtol=0)


def test_settings_can_be_overridden_when_loading_from_the_registry(registry: dict) -> None:
    predictor = load_predictor(
        "models:/tiny@champion",
        tracking_uri=registry["uri"],
        settings_overrides={"validation_crop_size": "40"},
    )
    assert predictor.settings["valid_crop_size"] == 40
    assert predictor.settings["valid_resize_size"] == 64


def test_cli_registers_a_new_version_and_moves_the_alias(
    registry: dict, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])  # the CLI's other URI source
    code = model_main(
        ["register", str(registry["model_dir"]), "--name", "tiny", "--alias", "champion"]
    )
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        f"registered tiny version 2 (alias champion) in {registry['uri']}",
        "load it with: models:/tiny@champion",
    ]
    assert resolve_version("models:/tiny@champion").version == 2
    assert resolve_version("models:/tiny/latest").version == 2
    assert resolve_version("models:/tiny/1").version == 1


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("models:/nobody@champion", "no registered model 'nobody' in .* \\(registered: [^)]*tiny"),
        ("models:/tiny@gold", "has no alias 'gold' \\(aliases: champion -> v\\d\\)"),
        ("models:/tiny/99", "has no version 99 \\(versions: 1"),
        ("models:/tiny", "model reference 'models:/tiny' is malformed"),
    ],
)
def test_unknown_references_say_what_exists(registry: dict, ref: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        load_predictor(ref, tracking_uri=registry["uri"])


def test_register_errors(registry: dict, tmp_path: Path, capsys) -> None:
    with pytest.raises(ModelError, match="no model found at"):
        register_model(tmp_path, name="x", tracking_uri=registry["uri"])
    code = model_main(["register", str(tmp_path), "--name", "x", "--tracking-uri", registry["uri"]])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"error: no model found at {tmp_path}")
    for alias in ("v3", "latest", "two words"):
        with pytest.raises(ModelError, match=f"alias '{alias}' is invalid"):
            register_model(registry["model_dir"], name="tiny", alias=alias, tracking_uri="x://")


def test_a_trial_run_is_linked_to_its_model_version(registry: dict, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry["uri"])
    experiment = client.create_experiment("runs", artifact_location=(tmp_path / "a").as_uri())
    run_dir = registry["model_dir"].parent  # the trial runner tags its run with this folder
    run = client.create_run(experiment, tags={"visionauto.run_dir": str(run_dir)})
    version = register_model(run_dir, name="linked", tracking_uri=registry["uri"])
    assert version.run_id == run.info.run_id
    found = resolve_version("models:/linked/1", tracking_uri=registry["uri"])
    assert found.run_id == run.info.run_id


def test_registry_uri_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert registry_uri() == default_tracking_uri(Path("outputs"))
    assert registry_uri() == f"sqlite:///{tmp_path.resolve()}/outputs/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert registry_uri() == f"sqlite:///{tmp_path.resolve()}/env.db"
    assert registry_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    with pytest.raises(ConfigError, match="MLflow's file store"):
        registry_uri("./mlruns")
    with pytest.raises(ModelError, match="no model registry at sqlite:///.*/env.db"):
        load_predictor("models:/tiny@champion")
    assert not (tmp_path / "env.db").exists()  # a lookup creates no database
    assert is_registry_ref("models:/tiny@champion") and not is_registry_ref(Path("models:/x"))
