"""include.mnist presets, the quality architecture, the graph-safe optimiser and the CPU fallback of the GPU path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch.utils.deterministic
from safetensors.torch import load_file

from include.mnist import train as train_module
from include.mnist.evaluate import evaluate_model
from include.mnist.model import (
    ARCHITECTURE,
    BACKGROUND,
    FAST_ARCHITECTURE,
    NARROW_ARCHITECTURE,
    QUALITY_ARCHITECTURE,
    BnCNN,
    MnistCNN,
    NarrowCNN,
    StridedCNN,
    build_model,
    count_parameters,
    normalize,
    shifted_views,
)
from include.mnist.train import (
    PRESETS,
    ModelFileError,
    NesterovSGD,
    TrainConfig,
    amp_dtype_for,
    load_model,
    save_model,
    train_model,
)

# 5 conv3x3 (no bias) + 5 BN (weight, bias) + FC 128->10
FAST995_PARAMETERS = (
    (9 * 32 + 9 * 32 * 32 + 9 * 32 * 64 + 9 * 64 * 64 + 9 * 64 * 128) + 2 * (32 + 32 + 64 + 64 + 128) + 1290
)
TINY_QUALITY = TrainConfig(
    preset="quality", epochs=1, batch_size=64, max_train_samples=256, seed=3, device="cpu"
)


def test_preset_defaults_and_explicit_overrides() -> None:
    fast = TrainConfig()
    assert (fast.preset, fast.epochs, fast.batch_size, fast.learning_rate) == ("fast", 1, 256, 0.01)
    quality = TrainConfig.from_params({"preset": "quality"})
    recipe = PRESETS["quality"]
    assert quality.recipe is recipe and recipe.architecture == QUALITY_ARCHITECTURE
    assert (quality.epochs, quality.batch_size, quality.learning_rate) == (8, 512, 0.1)
    # 0 is the trigger form's "preset default"; an explicit value wins for that field only.
    mixed = TrainConfig.from_params({"preset": "quality", "epochs": 3, "batch_size": 0, "learning_rate": 0})
    assert (mixed.epochs, mixed.batch_size, mixed.learning_rate) == (3, 512, 0.1)
    assert mixed.to_dict()["preset"] == "quality" and mixed.to_dict()["epochs"] == 3


def test_quality_model_shapes_parameters_and_tta() -> None:
    torch.manual_seed(0)
    model = build_model(QUALITY_ARCHITECTURE)
    assert isinstance(model, BnCNN) and count_parameters(model) == FAST995_PARAMETERS
    x = normalize(torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8))
    model.train()
    assert model(x).shape == (3, 10)
    model.eval()
    with torch.no_grad():
        tta = model(x)
        views = shifted_views(x)
        manual = torch.stack([model._logits(views[i * 3 : (i + 1) * 3]) for i in range(5)]).mean(dim=0)
    torch.testing.assert_close(tta, manual)
    # The first view is the input itself; the others are 1-px shifts filled with the black background.
    assert torch.equal(views[:3], x)
    assert torch.equal(views[3:6, :, :, 1:], x[..., :-1]) and bool((views[3:6, :, :, 0] == BACKGROUND).all())
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet-9000")


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_nesterov_sgd_matches_torch_sgd(tensor_lr: bool) -> None:
    torch.manual_seed(1)
    ours, ref = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    ref.load_state_dict(ours.state_dict())
    lr = torch.tensor(0.05) if tensor_lr else 0.05
    opt = NesterovSGD(ours.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(4):
        for model, optimizer in ((ours, opt), (ref, ref_opt)):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    torch.testing.assert_close(ours.weight, ref.weight)
    torch.testing.assert_close(ours.bias, ref.bias)
    assert not torch.equal(ours.weight, torch.nn.Linear(6, 3).weight)


def test_translation_gathers_shifted_crops() -> None:
    torch.manual_seed(2)
    raw = torch.randint(1, 256, (8, 28, 28), dtype=torch.uint8)
    images, labels = train_module._resident_data(raw.numpy(), torch.arange(8).numpy(), 2, torch.device("cpu"))
    assert images.shape == (8, 32, 32)
    model = build_model()
    step = train_module._TrainStep(
        model, torch.optim.SGD(model.parameters(), lr=0.1), images, labels, 8, 2, 0.0, None
    )
    step.idx.copy_(torch.tensor([5, 1, 7, 0, 2, 3, 6, 4]))
    x, y = step.batch()
    assert x.shape == (8, 1, 28, 28) and y.tolist() == [5, 1, 7, 0, 2, 3, 6, 4]
    shifts = set()
    for out, index in zip(x, y.tolist(), strict=True):
        padded = F.pad(raw[index], (2, 2, 2, 2))
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(normalize(padded[dy : dy + 28, dx : dx + 28].unsqueeze(0))[0], out)
        ]
        assert len(matches) == 1, matches
        shifts.add(matches[0])
    assert len(shifts) > 1  # offsets are drawn per image, not once per batch


def test_quality_training_saves_architecture_and_reloads(tmp_path: Path, data_dir: Path) -> None:
    lines: list[str] = []
    result = train_model(TINY_QUALITY, data_dir, tmp_path / "q" / "model.safetensors", log=lines.append)
    assert result.preset == "quality" and result.architecture == QUALITY_ARCHITECTURE
    assert result.parameters == FAST995_PARAMETERS and result.steps_per_epoch == 4
    config = json.loads((tmp_path / "q" / "model.json").read_text())
    assert config["architecture"] == QUALITY_ARCHITECTURE and config["preset"] == "quality"
    model = load_model(tmp_path / "q" / "model.safetensors")
    assert isinstance(model, BnCNN) and not model.training
    evaluation = evaluate_model(tmp_path / "q" / "model.safetensors", data_dir, max_samples=200, device="cpu")
    assert evaluation.num_samples == 200 and 0.0 <= evaluation.accuracy <= 1.0
    again = train_model(TINY_QUALITY, data_dir, tmp_path / "q2" / "model.safetensors")
    assert again.sha256 == result.sha256  # augmentation draws are seeded too
    assert "preset=quality" in lines[0]


def test_cpu_fallback_records_how_it_ran(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    # Whatever the host has, a machine without CUDA or native bf16 must run "auto" on the CPU, eager and fp32.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert amp_dtype_for(torch.device("cpu")) is None
    before = torch.are_deterministic_algorithms_enabled()
    fill_before = torch.utils.deterministic.fill_uninitialized_memory
    config = TrainConfig(epochs=1, batch_size=100, max_train_samples=250, device="auto", cuda_graph=True)
    result = train_model(config, data_dir, tmp_path / "m" / "model.safetensors")
    assert result.device == "cpu" and result.cuda_graph is False and result.amp_dtype is None
    assert result.capture_seconds == 0.0
    assert result.steps_per_epoch == 2  # the partial batch of 50 is dropped
    assert result.deterministic is True and torch.are_deterministic_algorithms_enabled() == before
    assert torch.utils.deterministic.fill_uninitialized_memory == fill_before  # global state restored
    assert result.threads >= 1 and result.torch_version == torch.__version__
    assert result.versions["torch"] == torch.__version__ and result.versions["cuda"]
    assert json.loads(json.dumps(result.to_dict()))["preset"] == "fast"
    state = load_file(tmp_path / "m" / "model.safetensors")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["architecture"] == FAST_ARCHITECTURE
    assert result.architecture == FAST_ARCHITECTURE and set(state) == set(StridedCNN().state_dict())
    with pytest.raises(ValueError, match="CUDA is not available"):
        train_model(TrainConfig(device="cuda", max_train_samples=64), data_dir, tmp_path / "x" / "model.safetensors")


def test_precision_auto_uses_bf16_only_where_the_cpu_has_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert amp_dtype_for(cpu) is torch.bfloat16 and amp_dtype_for(cpu, "fp32") is None
    # AVX512-BF16 without AMX trains the fast preset slower in bf16 than in fp32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert amp_dtype_for(cpu) is None and amp_dtype_for(cpu, "bf16") is torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert amp_dtype_for(cpu) is None and amp_dtype_for(cpu, "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")


def test_bf16_cpu_training_is_reproducible_and_recorded(tmp_path: Path, data_dir: Path) -> None:
    config = TrainConfig(epochs=1, batch_size=100, max_train_samples=400, device="cpu", precision="bf16")
    first = train_model(config, data_dir, tmp_path / "a" / "model.safetensors")
    again = train_model(config, data_dir, tmp_path / "b" / "model.safetensors")
    assert first.amp_dtype == "bfloat16" and first.sha256 == again.sha256
    assert [(e.loss, e.train_accuracy) for e in first.epochs] == [(e.loss, e.train_accuracy) for e in again.epochs]


def test_load_model_rejects_unknown_or_mismatched_architecture(tmp_path: Path) -> None:
    for name, architecture, message in (
        ("unknown", "vit-9000", "unknown architecture 'vit-9000'"),
        ("malformed", 5, "unknown architecture 5"),
        ("mismatch", QUALITY_ARCHITECTURE, f"tensor names differ from {QUALITY_ARCHITECTURE}"),
    ):
        path = tmp_path / name / "model.safetensors"
        save_model(build_model(), path, "fast")
        config = json.loads(path.with_name("model.json").read_text())
        path.with_name("model.json").write_text(json.dumps({**config, "architecture": architecture}))
        with pytest.raises(ModelFileError) as info:
            load_model(path)
        assert str(path.parent) in str(info.value) and message in str(info.value)


def test_each_architecture_round_trips_through_its_config(tmp_path: Path) -> None:
    # fast99, the former narrow nightly network and the strided one are told apart by model.json, not by sniffing:
    # fast99 and the strided network even have the same tensor names and shapes.
    for architecture, cls in ((ARCHITECTURE, MnistCNN), (NARROW_ARCHITECTURE, NarrowCNN),
                              (FAST_ARCHITECTURE, StridedCNN)):
        path = tmp_path / architecture / "model.safetensors"
        save_model(build_model(architecture), path, "fast")
        model = load_model(path.parent)
        assert type(model) is cls and model.architecture == architecture
    narrow = build_model(NARROW_ARCHITECTURE)
    assert type(narrow) is NarrowCNN and count_parameters(narrow) < count_parameters(MnistCNN())
    x = normalize(torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8))
    fast99, strided = build_model(ARCHITECTURE), build_model(FAST_ARCHITECTURE)
    strided.load_state_dict(fast99.state_dict())
    with torch.no_grad():
        assert not torch.allclose(fast99(x), strided(x))  # same weights, another network
