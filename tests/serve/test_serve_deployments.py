"""Deployments: argument and file parsing, traffic split, pinning, live changes, readiness."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.serve.serve_helpers import AUTH_KEY, ThreadServer, azure_body, wait_until
from visionauto.errors import ConfigError
from visionauto.serve.app import create_app
from visionauto.serve.deployments import (
    DeploymentSet,
    DeploymentSpec,
    TrafficFileWatcher,
    check_traffic,
    load_deployments_file,
    parse_deployment_arg,
    specs_traffic,
)

AUTH = {"Authorization": f"Bearer {AUTH_KEY}"}
PIN = "azureml-model-deployment"


class NamedPredictor:
    """Answers its own name, so a response tells which deployment scored it."""

    settings = {"task": "classification", "valid_resize_size": 72, "valid_crop_size": 64}

    def __init__(self, name: str) -> None:
        self.name = name

    def predict(self, images, *, overrides=None, batch_size=None):  # noqa: ANN001, ANN201
        return [{"deployment": self.name} for _ in images]


def test_parse_deployment_arg_keeps_colons_of_the_reference() -> None:
    assert parse_deployment_arg("blue=models:/fridge@champion:90") == DeploymentSpec(
        "blue", "models:/fridge@champion", 90
    )
    assert parse_deployment_arg("green=/runs/a/model:10") == DeploymentSpec(
        "green", "/runs/a/model", 10
    )
    assert parse_deployment_arg("solo=models:/fridge/3") == DeploymentSpec(
        "solo", "models:/fridge/3"
    )
    with pytest.raises(ConfigError, match="write NAME=MODEL:WEIGHT"):
        parse_deployment_arg("blue")
    with pytest.raises(ConfigError, match="deployment name '9lives' is invalid"):
        parse_deployment_arg("9lives=/m:100")


def test_traffic_rules() -> None:
    assert check_traffic(["blue", "green"], {"blue": 100}, where="t") == {"blue": 100, "green": 0}
    with pytest.raises(ConfigError, match="t: traffic adds up to 90%: it must add up to 100"):
        check_traffic(["blue", "green"], {"blue": 80, "green": 10}, where="t")
    with pytest.raises(ConfigError, match=r"unknown deployment\(s\) \['red'\]"):
        check_traffic(["blue"], {"red": 100}, where="t")
    with pytest.raises(ConfigError, match="traffic of 'blue' is -5"):
        check_traffic(["blue", "green"], {"blue": -5, "green": 105}, where="t")
    with pytest.raises(ConfigError, match="green has no weight"):
        specs_traffic([DeploymentSpec("blue", "a", 100), DeploymentSpec("green", "b")])
    assert specs_traffic([DeploymentSpec("solo", "a")]) == {"solo": 100}


def test_deployments_file_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "deploy" / "deployments.yml"
    path.parent.mkdir()
    path.write_text(
        "deployments:\n"
        "  - {name: blue, model: ../runs/a}\n"
        "  - {name: green, model: 'models:/fridge@challenger', settings: {valid_crop_size: 56}}\n"
        "traffic: {blue: 75, green: 25}\n"
    )
    specs, traffic = load_deployments_file(path)
    assert specs == [
        DeploymentSpec("blue", str((tmp_path / "runs" / "a").resolve())),
        DeploymentSpec("green", "models:/fridge@challenger", settings={"valid_crop_size": 56}),
    ]
    assert traffic == {"blue": 75, "green": 25}
    path.write_text("models: []\n")
    with pytest.raises(ConfigError, match="has no 'deployments' list"):
        load_deployments_file(path)


def _set(traffic: dict[str, int], seed: int | None = 0, loader=None) -> DeploymentSet:  # noqa: ANN001
    specs = [DeploymentSpec(name, f"/models/{name}") for name in traffic]
    return DeploymentSet(
        specs, traffic, loader=loader or (lambda spec: NamedPredictor(spec.name)), seed=seed
    )


def test_draws_follow_the_weights_and_a_pin_wins() -> None:
    deployments = _set({"blue": 90, "green": 10})
    counts = Counter(deployments.choose().name for _ in range(10_000))
    assert counts["blue"] / 10_000 == pytest.approx(0.9, abs=0.02)
    deployments.set_traffic({"green": 100})
    assert {deployments.choose().name for _ in range(200)} == {"green"}
    assert deployments.choose("blue").name == "blue"  # pinned, even at 0 %
    with pytest.raises(KeyError):
        deployments.choose("red")


def test_readiness_is_503_until_every_deployment_is_loaded(tmp_path: Path) -> None:
    release = threading.Event()

    def slow_loader(spec: DeploymentSpec) -> NamedPredictor:
        if spec.name == "green":
            release.wait(30)
        return NamedPredictor(spec.name)

    deployments = _set({"blue": 50, "green": 50}, loader=slow_loader)
    with ThreadServer(create_app(deployments)) as server, httpx.Client(base_url=server.base) as c:
        assert c.get("/health/live").status_code == 200
        wait_until(lambda: deployments.deployments["blue"].state == "ready", 30, "blue loaded")
        response = c.get("/health/ready")
        assert response.status_code == 503
        assert response.json() == {
            "error": "model is loading",
            "deployments": {"blue": "ready", "green": "loading"},
        }
        pinned = c.post("/score", json=azure_body([b"x"]), headers={PIN: "green"})
        assert pinned.status_code == 503
        assert pinned.json() == {"error": "deployment 'green' is loading; retry later."}
        release.set()
        wait_until(lambda: c.get("/health/ready").status_code == 200, 30, "ready")


def test_a_model_that_fails_to_load_keeps_readiness_at_503_with_the_reason() -> None:
    def broken(spec: DeploymentSpec) -> NamedPredictor:
        raise ConfigError("weights.pt does not fit")

    deployments = _set({"blue": 100}, loader=broken)
    with ThreadServer(create_app(deployments)) as server, httpx.Client(base_url=server.base) as c:
        wait_until(lambda: deployments.deployments["blue"].state == "failed", 30, "failure")
        response = c.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["error"] == (
            "model failed to load: blue: ConfigError: weights.pt does not fit"
        )
        assert c.get("/health/live").status_code == 200


def test_editing_the_deployments_file_changes_traffic_without_restart(
    tmp_path: Path, images: list[bytes]
) -> None:
    path = tmp_path / "deployments.yml"
    path.write_text(
        "deployments: [{name: blue, model: /m/blue}, {name: green, model: /m/green}]\n"
        "traffic: {blue: 100}\n"
    )
    specs, traffic = load_deployments_file(path)
    deployments = DeploymentSet(specs, traffic, loader=lambda s: NamedPredictor(s.name))
    watcher = TrafficFileWatcher(path, deployments, interval_s=0.05)
    with ThreadServer(create_app(deployments, watcher=watcher)) as server:
        with httpx.Client(base_url=server.base) as c:
            wait_until(lambda: c.get("/health/ready").status_code == 200, 30, "ready")
            assert c.get("/deployments").json()["traffic"] == {"blue": 100, "green": 0}
            time.sleep(0.05)  # a new mtime even on coarse file systems
            path.write_text(path.read_text().replace("{blue: 100}", "{blue: 0, green: 100}"))
            wait_until(lambda: deployments.traffic["green"] == 100, 10, "new traffic")
            answers = {c.post("/score", json=azure_body(images[:1])).json()[0]["deployment"]
                       for _ in range(10)}  # fmt: skip
            assert answers == {"green"}
            path.write_text(path.read_text().replace("green: 100", "green: 50"))  # sums to 50
            time.sleep(0.5)
            assert deployments.traffic == {"blue": 0, "green": 100}  # bad file ignored


@pytest.mark.slow
def test_blue_green_endpoint_process(start_server, run_dir: Path, other_run_dir: Path, images):  # noqa: ANN001
    _, base = start_server(
        "--deployment", f"blue={run_dir}:70", "--deployment", f"green={other_run_dir}:30",
        "--auth-key", AUTH_KEY, "--max-wait-ms", "0",
    )  # fmt: skip
    body = azure_body(images[:1])
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
        names = Counter(client.post("/score", json=body).headers[PIN] for _ in range(100))
        assert set(names) == {"blue", "green"}
        assert 45 <= names["blue"] <= 90  # 70 % expected; bounds hold with p > 0.9999
        pinned = [client.post("/score", json=body, headers={PIN: "green"}) for _ in range(5)]
        assert {r.headers[PIN] for r in pinned} == {"green"}
        blue = client.post("/score", json=body, headers={PIN: "blue"}).json()
        green = pinned[0].json()
        assert not np.allclose(blue[0]["probs"], green[0]["probs"])  # different weights
        assert httpx.put(f"{base}/deployments/traffic", json={"green": 100}).status_code == 401
        bad = client.put("/deployments/traffic", json={"blue": 50})
        assert bad.status_code == 400
        assert "traffic adds up to 50%" in bad.json()["error"]
        changed = client.put("/deployments/traffic", json={"blue": 0, "green": 100})
        assert changed.json() == {"traffic": {"blue": 0, "green": 100}}
        assert {client.post("/score", json=body).headers[PIN] for _ in range(20)} == {"green"}
        listed = client.get("/deployments").json()
        assert [(d["name"], d["traffic"], d["state"]) for d in listed["deployments"]] == [
            ("blue", 0, "ready"),
            ("green", 100, "ready"),
        ]
