"""include.mnist.container: the training image's entry point trains, scans and prints one parseable result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from include.mnist import container


def test_entry_point_trains_scans_and_prints_the_result(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "run" / "model" / "model.safetensors"
    config = {"epochs": 1, "batch_size": 64, "max_train_samples": 256, "seed": 3, "device": "cpu"}
    assert container.main(container.container_command(config, data_dir, output)) == 0
    result = container.parse_result(capsys.readouterr().out)
    assert result["result"]["model_path"] == str(output) and output.is_file()
    assert result["result"]["num_train_samples"] == 256
    assert result["model_scan"]["safe"] is True
    assert result["config"]["seed"] == 3


def test_container_command_carries_the_config_as_json() -> None:
    argv = container.container_command({"seed": 1, "epochs": 2}, "/data", Path("/run/model.pt"))
    assert argv == ["--config", '{"epochs": 2, "seed": 1}', "--data-dir", "/data", "--output", "/run/model.pt"]
    assert json.loads(argv[1]) == {"seed": 1, "epochs": 2}


def test_parse_result_takes_the_last_result_line() -> None:
    logs = f"epoch 1\n{container.RESULT_PREFIX}{json.dumps({'n': 1})}\nwarning\n{container.RESULT_PREFIX}{{\"n\": 2}}\n"
    assert container.parse_result(logs) == {"n": 2}


def test_parse_result_refuses_output_without_a_result_line() -> None:
    with pytest.raises(ValueError, match="no result line"):
        container.parse_result("epoch 1 loss 0.3\n")
