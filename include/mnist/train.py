"""Train the fast99 CNN on verified MNIST with the whole data set resident in memory."""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import random
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from include.mnist.data import load_split
from include.mnist.model import MnistCNN, build_model, count_parameters, normalize

_DEVICE_NAMES = ("auto", "cpu", "cuda")


class ModelFileError(ValueError):
    """A model file is not a loadable MnistCNN state dict; the message names the file."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; a sample cap of None (or 0) means the whole split."""

    epochs: int = 1
    batch_size: int = 256
    learning_rate: float = 0.01
    seed: int = 42
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"learning_rate must be a finite number > 0, got {lr!r}")
        object.__setattr__(self, "learning_rate", float(lr))
        for name in ("max_train_samples", "max_test_samples"):
            value = getattr(self, name)
            if value is None:
                continue
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} must be None or an int >= 0, got {value!r}")
            if value == 0:
                # Airflow's trigger form cannot send None for an integer Param, so 0 stands for "all".
                object.__setattr__(self, name, None)
        device = self.device
        if not isinstance(device, str) or not (
            device in _DEVICE_NAMES or (device.startswith("cuda:") and device[5:].isdigit())
        ):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> TrainConfig:
        """Build a validated config from DAG params, ignoring keys that are not config fields."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in known})  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """A JSON-able copy for logging as MLflow params."""
        return asdict(self)


@dataclass(frozen=True)
class EpochMetrics:
    """Per-epoch training figures."""

    epoch: int
    loss: float
    train_accuracy: float
    images_per_second: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """Where the model was written, its sha256, and how training went."""

    model_path: str
    sha256: str
    epochs: tuple[EpochMetrics, ...]
    train_seconds: float
    num_train_samples: int
    device: str
    parameters: int
    data_digests: dict[str, str]

    def to_dict(self) -> dict[str, object]:
        """A JSON-able copy for XCom."""
        out = asdict(self)
        out["epochs"] = [asdict(m) for m in self.epochs]
        return out


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one value."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda when available, else cpu; other names are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def _cpu_threads() -> int:
    # Honour the CPU affinity / cgroup share of a worker rather than the host's core count.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _atomic_write_bytes(data: bytes, path: Path) -> None:
    """Write bytes to path via a temp file in the same directory, fsync, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    # Persist the rename itself, so a crash cannot leave the directory pointing at nothing.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_state_dict(model: torch.nn.Module, path: Path) -> str:
    """Atomically save model.state_dict() (CPU tensors) to path; return the sha256 of the bytes written."""
    buffer = io.BytesIO()
    # contiguous() stores NCHW weights whatever layout training used, so the file does not depend on it.
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    data = buffer.getvalue()
    _atomic_write_bytes(data, Path(path))
    return hashlib.sha256(data).hexdigest()


def train_model(
    config: TrainConfig,
    data_dir: Path,
    output_path: Path,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train on the verified train split and save the state dict atomically to output_path."""
    emit = log or (lambda _msg: None)
    device = resolve_device(config.device)
    split = load_split(Path(data_dir), "train", limit=config.max_train_samples)
    num_samples = len(split)

    previous_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(_cpu_threads())
    try:
        set_seed(config.seed)
        emit(
            f"seed={config.seed} device={device} threads={torch.get_num_threads()} "
            f"samples={num_samples} config={config.to_dict()}"
        )
        # Whole split pre-normalized and resident on the device: indexing beats a per-item DataLoader
        # by an order of magnitude at this model size (performance-baselines.md §1.3).
        # channels_last halves the CPU step time (oneDNN's NHWC conv and max-pool kernels are much faster
        # than NCHW at these sizes); for C=1 input it only changes strides, not memory.
        images = normalize(torch.from_numpy(split.images)).to(device, memory_format=torch.channels_last)
        labels = torch.from_numpy(split.labels.astype(np.int64)).to(device)

        model = build_model().to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=(0.7, 0.9))
        steps_per_epoch = math.ceil(num_samples / config.batch_size)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.learning_rate,
            total_steps=config.epochs * steps_per_epoch,
            cycle_momentum=False,
        )
        # A dedicated CPU generator keeps the shuffle order independent of any other RNG consumer.
        shuffle_gen = torch.Generator().manual_seed(config.seed)

        history: list[EpochMetrics] = []
        train_start = time.perf_counter()
        model.train()
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            order = torch.randperm(num_samples, generator=shuffle_gen).to(device)
            # Summed on the device so the loop never waits on a .item() per step.
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            for step in range(steps_per_epoch):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                x, y = images[idx], labels[idx]
                optimizer.zero_grad(set_to_none=True)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * y.shape[0]
                correct += (logits.detach().argmax(dim=1) == y).sum()
            epoch_loss = loss_sum.item() / num_samples
            epoch_acc = correct.item() / num_samples
            seconds = time.perf_counter() - epoch_start
            metrics = EpochMetrics(
                epoch=epoch,
                loss=epoch_loss,
                train_accuracy=epoch_acc,
                images_per_second=num_samples / seconds if seconds > 0 else float("inf"),
                seconds=seconds,
            )
            history.append(metrics)
            eta = (time.perf_counter() - train_start) / epoch * (config.epochs - epoch)
            emit(
                f"epoch {epoch}/{config.epochs} loss={epoch_loss:.4f} train_acc={epoch_acc:.4f} "
                f"images/s={metrics.images_per_second:,.0f} epoch_s={seconds:.2f} eta_s={eta:.1f}"
            )
        train_seconds = time.perf_counter() - train_start
        sha256 = save_state_dict(model, Path(output_path))
        emit(f"saved {output_path} sha256={sha256} train_s={train_seconds:.2f}")
        return TrainResult(
            model_path=str(output_path),
            sha256=sha256,
            epochs=tuple(history),
            train_seconds=train_seconds,
            num_train_samples=num_samples,
            device=str(device),
            parameters=count_parameters(model),
            data_digests=dict(split.digests),
        )
    finally:
        torch.set_num_threads(previous_threads)


def load_model(path: Path) -> MnistCNN:
    """Load a state dict saved by train_model into a new MnistCNN (CPU, eval mode), weights only."""
    path = Path(path)
    try:
        # weights_only=True refuses arbitrary pickled objects, so a tampered file cannot run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a loadable torch state dict ({exc})") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    model = build_model()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: state dict does not match MnistCNN ({exc})") from exc
    return model.eval()
