"""include.mnist.container: the training image's entry point trains, scans and prints one parseable result;
the launcher runs the image through the Docker SDK with the mounts, GPU request and no network it was given."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from include.mnist import container


def test_entry_point_trains_scans_and_prints_the_result(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "run" / "model.pt"
    config = {"epochs": 1, "batch_size": 64, "max_train_samples": 256, "seed": 3, "device": "cpu"}
    assert container.main(["--config", json.dumps(config), "--data-dir", str(data_dir), "--output", str(output)]) == 0
    result = container.parse_result(capsys.readouterr().out)
    assert result["result"]["model_path"] == str(output) and output.is_file()
    assert result["result"]["num_train_samples"] == 256
    assert result["model_scan"]["safe"] is True
    assert result["config"]["seed"] == 3


def test_parse_result_refuses_output_without_a_result_line() -> None:
    with pytest.raises(ValueError, match="no result line"):
        container.parse_result("epoch 1 loss 0.3\n")


class _FakeContainer:
    def __init__(self, status: int, logs: str) -> None:
        self.status, self.text, self.removed = status, logs, False

    def logs(self, stream: bool = False, follow: bool = False):
        return iter([self.text.encode()]) if stream else self.text.encode()

    def wait(self) -> dict:
        return {"StatusCode": self.status}

    def remove(self, force: bool = False) -> None:
        self.removed = True


def _fake_docker(monkeypatch: pytest.MonkeyPatch, fake: _FakeContainer) -> dict:
    calls: dict = {}

    class Containers:
        def run(self, image, **kwargs):
            calls.update(image=image, **kwargs)
            return fake

    class DeviceRequest:
        def __init__(self, **kwargs) -> None:
            self.kwargs = kwargs

    module = types.SimpleNamespace(
        DockerClient=lambda base_url: types.SimpleNamespace(containers=Containers()),
        types=types.SimpleNamespace(DeviceRequest=DeviceRequest),
    )
    monkeypatch.setitem(sys.modules, "docker", module)
    return calls


def test_launcher_mounts_requests_gpu_and_returns_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    line = container.RESULT_PREFIX + json.dumps({"result": {"sha256": "ab"}, "model_scan": {"safe": True}})
    fake = _FakeContainer(0, f"training...\n{line}\n")
    calls = _fake_docker(monkeypatch, fake)
    out = container.train_in_container(
        image="mnist-mlops-training:0.1.0", config={"epochs": 1}, data_dir=Path("/d"), output=Path("/s/m.pt"),
        mounts={"proj_mlops-state": "/s"}, gpus=1, log=lambda _msg: None,
    )
    assert out["result"]["sha256"] == "ab" and fake.removed
    assert calls["volumes"] == {"proj_mlops-state": {"bind": "/s", "mode": "rw"}}
    assert calls["network_disabled"] is True
    assert calls["device_requests"][0].kwargs == {"count": 1, "capabilities": [["gpu"]]}
    assert calls["command"][calls["command"].index("--output") + 1] == "/s/m.pt"


def test_launcher_raises_with_the_logs_when_training_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeContainer(1, "Traceback: CUDA out of memory\n")
    _fake_docker(monkeypatch, fake)
    with pytest.raises(RuntimeError, match=r"(?s)exited 1:.*CUDA out of memory"):
        container.train_in_container(image="img:1", config={}, data_dir=Path("/d"), output=Path("/o"),
                                     mounts={}, log=lambda _msg: None)
    assert fake.removed
