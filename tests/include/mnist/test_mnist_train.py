"""include.mnist.model / train / evaluate: a small real training run that must learn, save atomically and reload."""

from __future__ import annotations

import json
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from include.mnist import train as train_module
from include.mnist.data import MNIST_FILES, load_split, sha256_file
from include.mnist.evaluate import EvalResult, evaluate_model
from include.mnist.model import (
    ARCHITECTURE,
    FAST_ARCHITECTURE,
    MNIST_MEAN,
    MNIST_STD,
    QUALITY_ARCHITECTURE,
    MnistCNN,
    StridedCNN,
    build_model,
    count_parameters,
    normalize,
)
from include.mnist.train import (
    ModelFileError,
    TrainConfig,
    TrainResult,
    load_model,
    resolve_device,
    train_model,
)

# Small enough for a CPU test, big enough that the net clearly learns: 1024 images, 2 epochs of 16 steps.
SMALL = TrainConfig(epochs=2, batch_size=64, max_train_samples=1024, seed=7, device="cpu")
# conv1 24*1*5*5+24, conv2 32*24*3*3+32, fc1 800*256+256, fc2 256*10+10
FAST99_PARAMETERS = 624 + 6944 + 205_056 + 2_570
# The fast preset's StridedCNN: fast99's tensors (conv 1->24 5x5 at stride 2, conv 24->32 3x3, fc 800->256, fc 256->10).
STRIDED_PARAMETERS = FAST99_PARAMETERS


@dataclass(frozen=True)
class Trained:
    result: TrainResult
    path: Path
    log: list[str]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Trained:
    out_dir = tmp_path_factory.mktemp("model")
    lines: list[str] = []
    path = out_dir / "nested" / "model.safetensors"
    result = train_model(SMALL, data_dir, path, log=lines.append)
    return Trained(result=result, path=path, log=lines)


def test_model_forward_shape_and_parameters() -> None:
    torch.manual_seed(0)
    model = build_model()
    assert isinstance(model, MnistCNN) and ARCHITECTURE == "fast99-cnn"
    logits = model(normalize(torch.zeros(5, 28, 28, dtype=torch.uint8)))
    assert logits.shape == (5, 10) and logits.dtype == torch.float32
    assert count_parameters(model) == FAST99_PARAMETERS


def test_normalize_constants_and_checks() -> None:
    x = torch.tensor([[0, 255]], dtype=torch.uint8).expand(28, 2).reshape(1, 28, 2)
    pixels = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    pixels[1] = 255
    out = normalize(pixels)
    assert out.shape == (2, 1, 28, 28) and out.dtype == torch.float32
    assert out[0].unique().item() == pytest.approx(-MNIST_MEAN / MNIST_STD)
    assert out[1].unique().item() == pytest.approx((1 - MNIST_MEAN) / MNIST_STD)
    assert pixels.max().item() == 255  # the input is not modified in place
    with pytest.raises(TypeError, match="uint8"):
        normalize(pixels.float())
    with pytest.raises(ValueError, match="28"):
        normalize(x)


def test_train_config_defaults_and_from_params() -> None:
    default = TrainConfig()
    assert (default.epochs, default.batch_size, default.learning_rate, default.seed) == (1, 256, 0.01, 42)
    cfg = TrainConfig.from_params(
        {"epochs": 3, "learning_rate": 1, "max_train_samples": 0, "max_test_samples": 500, "owner": "x"}
    )
    assert cfg.epochs == 3 and cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.max_train_samples is None and cfg.max_test_samples == 500
    assert cfg.to_dict() == {
        "epochs": 3,
        "batch_size": 256,
        "learning_rate": 1.0,
        "seed": 42,
        "max_train_samples": None,
        "max_test_samples": 500,
        "device": "auto",
        "preset": "fast",
        "cuda_graph": True,
        "deterministic": True,
        "precision": "auto",
    }
    assert TrainConfig.from_params({"device": "cuda:1"}).device == "cuda:1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", -1),
        ("epochs", "2"),
        ("epochs", True),
        ("batch_size", -1),
        ("batch_size", 1.5),
        ("learning_rate", -0.5),
        ("learning_rate", float("nan")),
        ("learning_rate", "0.01"),
        ("seed", -3),
        ("max_train_samples", -1),
        ("max_test_samples", 2.0),
        ("device", "tpu"),
        ("preset", "turbo"),
        ("cuda_graph", "yes"),
        ("deterministic", 1),
    ],
)
def test_train_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig.from_params({field: value})
    assert field in str(info.value) and repr(value) in str(info.value)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_training_learns_and_reports(trained: Trained, data_dir: Path) -> None:
    result = trained.result
    assert result.num_train_samples == 1024 and result.device == "cpu"
    assert result.parameters == STRIDED_PARAMETERS and result.architecture == FAST_ARCHITECTURE
    assert [m.epoch for m in result.epochs] == [1, 2]
    assert result.epochs[1].loss < result.epochs[0].loss
    assert all(m.images_per_second > 0 and m.seconds > 0 for m in result.epochs)
    assert 0 < result.train_seconds < 60
    assert set(result.data_digests) == set(MNIST_FILES["train"])
    assert sum(line.startswith("epoch ") for line in trained.log) == 2
    assert "eta_s=" in trained.log[-2] and "seed=7" in trained.log[0]

    # Held out: the first 500 test records were never seen in training; chance is 0.1.
    evaluation = evaluate_model(trained.path, data_dir, max_samples=500)
    assert isinstance(evaluation, EvalResult)
    assert evaluation.num_samples == 500
    assert evaluation.accuracy > 0.7, evaluation
    assert math.isfinite(evaluation.loss) and evaluation.loss < 1.5
    assert sorted(evaluation.per_class_accuracy) == [str(c) for c in range(10)]
    labels = load_split(data_dir, "test", limit=500).labels
    weighted = sum(evaluation.per_class_accuracy[str(c)] * np.sum(labels == c) for c in range(10)) / 500
    assert weighted == pytest.approx(evaluation.accuracy)
    assert evaluation.to_dict()["num_samples"] == 500


def test_saved_model_is_safetensors_plus_config_written_atomically(trained: Trained) -> None:
    from safetensors.torch import load_file

    path = trained.path
    assert trained.result.model_path == str(path)
    assert trained.result.sha256 == sha256_file(path)
    assert sorted(os.listdir(path.parent)) == ["model.json", "model.safetensors"]  # no temp file left behind
    assert trained.result.model_config == str(path.parent / "model.json")
    config = json.loads((path.parent / "model.json").read_text())
    assert config == {"format": "mnist-cnn-safetensors/1", "architecture": "fast99-strided-cnn", "preset": "fast",
                      "input_shape": [1, 28, 28], "input_dtype": "uint8", "dtype": "float32", "num_classes": 10}
    state = load_file(path)
    assert set(state) == set(StridedCNN().state_dict())
    model = load_model(path.parent)
    assert not model.training and isinstance(model, StridedCNN)
    x = normalize(torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8))
    with torch.no_grad():
        reference = StridedCNN()
        reference.load_state_dict(state)
        torch.testing.assert_close(model(x), reference(x))


def test_training_is_deterministic(trained: Trained, data_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    again = train_model(SMALL, data_dir, tmp_path / "again" / "model.safetensors")
    first, second = load_file(trained.path), load_file(tmp_path / "again" / "model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert [m.loss for m in again.epochs] == [m.loss for m in trained.result.epochs]
    assert again.sha256 == trained.result.sha256  # the artifact itself is byte-reproducible
    other = train_model(
        TrainConfig(epochs=1, batch_size=64, max_train_samples=256, seed=8, device="cpu"),
        data_dir,
        tmp_path / "other" / "model.safetensors",
    )
    third = load_file(other.model_path)
    assert not torch.equal(first["fc2.weight"], third["fc2.weight"])


def test_failed_save_keeps_previous_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"previous model")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(train_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        train_module.save_model(build_model(), path, "fast")
    assert path.read_bytes() == b"previous model"
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_a_model_is_never_saved_as_a_pickle(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="safetensors"):
        train_module.save_model(build_model(), tmp_path / "model.pt", "fast")


class _NotWeights:
    pass


def _saved(folder: Path, architecture: str = ARCHITECTURE) -> Path:
    path = folder / "model.safetensors"
    train_module.save_model(build_model(architecture), path, "fast")
    return path


def test_load_model_never_unpickles(tmp_path: Path) -> None:
    """A torch pickle, even a harmless state dict, is refused by the loader: the pipeline loads safetensors only."""
    legacy = tmp_path / "legacy.pt"
    train_module.save_state_dict(build_model(), legacy)
    pickled = tmp_path / "pickled-object.pt"
    torch.save({"obj": _NotWeights()}, pickled)
    plain_pickle = tmp_path / "plain.pkl"
    plain_pickle.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    for path in (legacy, pickled, plain_pickle):
        with pytest.raises(ModelFileError, match="only safetensors") as info:
            load_model(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "model.json").unlink(), "not a readable model config"),
        (lambda d: (d / "model.json").write_text("[1]"), "not a JSON object"),
        (lambda d: (d / "model.json").write_text(json.dumps({"architecture": "gpt"})), "keys"),
        (lambda d: _edit_config(d, architecture="resnet"), "unknown architecture"),
        (lambda d: _edit_config(d, input_shape=[3, 32, 32]), "input_shape"),
        (lambda d: _edit_config(d, architecture=QUALITY_ARCHITECTURE), "tensor names differ"),
        (lambda d: (d / "model.safetensors").write_bytes(b"not a torch file"), "safetensors header"),
        (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-4]), "cover"),
        (lambda d: _replace_weights(d, {"weight": torch.zeros(3)}), "tensor names differ"),
        (lambda d: _replace_weights(d, {k: v.double() for k, v in build_model().state_dict().items()}),
         "differ in dtype or shape"),
    ],
)
def test_load_model_rejects_bad_files(tmp_path: Path, change, message: str) -> None:
    _saved(tmp_path)
    change(tmp_path)
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(tmp_path)
    assert str(tmp_path) in str(info.value)


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**config, **changes}))


def _replace_weights(folder: Path, state: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
