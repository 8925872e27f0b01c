"""Train an MNIST CNN on verified data with the whole data set resident on the device (CPU or CUDA)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.deterministic
from torch import nn

from include.mlops.cpu_threads import ThreadGovernor, cpu_budget, pinned_threads, training_threads
from include.mlops.files import atomic_write_bytes
from include.mnist.data import load_split
from include.mnist.model import (
    ARCHITECTURE,
    ARCHITECTURES,
    FAST_ARCHITECTURE,
    INPUT_SHAPE,
    NUM_CLASSES,
    QUALITY_ARCHITECTURE,
    build_model,
    count_parameters,
    normalize,
)

_DEVICE_NAMES = ("auto", "cpu", "cuda")
# Key under which a non-default architecture is stored in the saved state dict, as a uint8 tensor of its
# name: every value stays a tensor, so weights_only loading accepts the file and tools that walk a state
# dict still work. fast99 files carry no such key: the same format older releases wrote and read.
ARCHITECTURE_KEY = "_meta.architecture"
# Eager steps before CUDA-graph capture: lets autograd, cuBLAS/cuDNN and the optimizer state allocate.
_GRAPH_WARMUP_STEPS = 3
# Fused Adam on CPU: same accuracy, one kernel per update instead of ~10 foreach ops (a switch for benches).
_CPU_FUSED_ADAM = True


class ModelFileError(ValueError):
    """A model file is not a loadable MNIST state dict; the message names the file."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Preset:
    """A named recipe: architecture, optimiser, schedule and the defaults of the tunable fields."""

    name: str
    architecture: str
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str  # "adam" (betas 0.7/0.9) or "sgd" (Nesterov 0.9, weight decay below)
    weight_decay: float
    label_smoothing: float
    translate_px: int  # random +-N px translation of each training image; 0 = none
    pct_start: float  # OneCycle warm-up share


PRECISIONS = ("auto", "fp32", "bf16")

PRESETS: dict[str, Preset] = {
    # The 1-epoch recipe of github.com/tuomaso/train_mnist_fast ("99 % in 0.76 s": Adam, OneCycle, batch 256) on
    # the strided network (model.StridedCNN), with label smoothing 0.1 ("Rethinking the Inception Architecture",
    # Szegedy et al., 2016). On 2 Xeon (AMX) cores the worst of 12 seeds went from 98.93 % (the narrow network
    # without smoothing) to 99.09 % in bf16 (mean 99.19 %), in 1.8 s of training instead of 2.3 s; fp32 takes 3.5 s
    # at the same accuracy (bench/bench_training.py).
    "fast": Preset(
        name="fast",
        architecture=FAST_ARCHITECTURE,
        epochs=1,
        batch_size=256,
        learning_rate=0.01,
        optimizer="adam",
        weight_decay=0.0,
        label_smoothing=0.1,
        translate_px=0,
        pct_start=0.3,
    ),
    # fast995: BN CNN, +-2 px translation, label smoothing, SGD-Nesterov, 8 epochs, 5-view TTA (the techniques of the
    # CIFAR-10 speed runs, github.com/KellerJordan/cifar10-airbench); ~99.5 % (bench/bench_training.py --quality).
    "quality": Preset(
        name="quality",
        architecture=QUALITY_ARCHITECTURE,
        epochs=8,
        batch_size=512,
        learning_rate=0.1,
        optimizer="sgd",
        weight_decay=5e-4,
        label_smoothing=0.1,
        translate_px=2,
        pct_start=0.25,
    ),
}


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; epochs, batch_size and learning_rate left at None (or 0) take the preset's value.

    Rule: the preset ("fast" or "quality") fixes the architecture, optimiser, schedule shape and
    augmentation; an explicit non-zero epochs / batch_size / learning_rate overrides the preset's default
    for that field only. A sample cap of None (or 0) means the whole split. `cuda_graph` captures the whole
    step in one CUDA graph when training on CUDA (ignored on CPU); `deterministic` turns on
    torch.use_deterministic_algorithms (warn_only) for the run. `precision` "auto" trains under bf16 autocast
    where bf16 is the faster choice (AMX on the CPU; see amp_dtype_for) and in fp32 elsewhere.
    """

    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    seed: int = 42
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    device: str = "auto"
    preset: str = "fast"
    cuda_graph: bool = True
    deterministic: bool = True
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        recipe = PRESETS[self.preset]
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is None or (_is_int(value) and value == 0):
                # 0 is the trigger form's "use the preset's value" (an integer Param cannot send None).
                object.__setattr__(self, name, getattr(recipe, name))
            elif not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1 (or 0/None for the preset's), got {value!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        lr = self.learning_rate
        if lr is None or (not isinstance(lr, bool) and isinstance(lr, int | float) and lr == 0):
            lr = recipe.learning_rate
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
        for name in ("cuda_graph", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")

    @property
    def recipe(self) -> Preset:
        """The Preset this config resolves against."""
        return PRESETS[self.preset]

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> TrainConfig:
        """Build a validated config from DAG params, ignoring keys that are not config fields."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in known})  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """A JSON-able copy (preset defaults resolved) for logging as MLflow params."""
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
    """Where the model was written, its sha256, and how (and with what) training ran."""

    model_path: str
    sha256: str
    epochs: tuple[EpochMetrics, ...]
    train_seconds: float
    num_train_samples: int
    device: str
    parameters: int
    data_digests: dict[str, str]
    preset: str = "fast"
    architecture: str = ARCHITECTURE
    deterministic: bool = False
    threads: int = 0  # at the end of training; thread_changes lists (step, from, to) when the load moved it
    thread_changes: tuple[tuple[int, int, int], ...] = ()
    amp_dtype: str | None = None
    cuda_graph: bool = False
    capture_seconds: float = 0.0  # one-off CUDA-graph warm-up + capture, included in train_seconds
    steps_per_epoch: int = 0
    torch_version: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    model_config: str = ""  # the JSON config written beside model_path

    def to_dict(self) -> dict[str, object]:
        """A JSON-able copy for XCom."""
        out = asdict(self)
        out["epochs"] = [asdict(m) for m in self.epochs]
        return out


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) from one value."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds all CUDA generators


def library_versions() -> dict[str, str]:
    """Versions of the interpreter and the libraries that decide the numerics of a run."""
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda or "none",
    }
    if torch.cuda.is_available():
        versions["cudnn"] = str(torch.backends.cudnn.version())
        versions["gpu"] = torch.cuda.get_device_name()
    return versions


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda when available, else cpu; other names are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def amp_dtype_for(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype: bf16 where it trains faster ("auto"), or as asked; None is fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else None
    # AMX runs oneDNN's bf16 convolutions on its tile units: the fast preset trained in 1.8 s against fp32's 3.5 s
    # at the same accuracy on 2 Xeon cores. AVX512-BF16 alone is not enough: on the same Xeon with AMX hidden by
    # the hypervisor, bf16 took 4.5-5.3 s against fp32's 3.2-4.1 s (bench/bench_training.py, seeds 42, 1 to 4).
    return torch.bfloat16 if _cpu_has_amx() else None


def _cpu_has_amx() -> bool:
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def _cpu_has_native_bf16() -> bool:
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


class NesterovSGD(torch.optim.Optimizer):
    """SGD with Nesterov momentum and weight decay in foreach ops; the LR may be a device tensor (graph-safe)."""

    def __init__(
        self, params: Iterable[nn.Parameter], lr: float | torch.Tensor, momentum: float, weight_decay: float
    ) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        """One update, p -= lr * (g + m * buf) with buf = m * buf + g and g = grad + wd * p (torch SGD)."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                bufs.append(state["momentum_buffer"])
            momentum, lr = group["momentum"], group["lr"]
            if group["weight_decay"]:
                torch._foreach_add_(grads, params, alpha=group["weight_decay"])
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(grads, bufs, alpha=momentum)
            if isinstance(lr, torch.Tensor):
                # A tensor LR is read on the device, so a captured graph sees the scheduler's updates.
                torch._foreach_mul_(grads, lr)
                torch._foreach_sub_(params, grads)
            else:
                torch._foreach_add_(params, grads, alpha=-lr)


def _build_optimizer(
    model: nn.Module, recipe: Preset, lr: float, device: torch.device, graph: bool
) -> torch.optim.Optimizer:
    """The preset's optimiser; under a CUDA graph the LR lives in a device tensor the scheduler fills."""
    lr_value: float | torch.Tensor = torch.tensor(lr, device=device) if graph else lr
    if recipe.optimizer == "adam":
        if graph:
            return torch.optim.Adam(
                model.parameters(), lr=lr_value, betas=(0.7, 0.9), capturable=True, foreach=True
            )
        # fused on CPU: one kernel for the whole update instead of ~10 foreach ops (fewer OpenMP regions).
        fused = device.type == "cpu" and _CPU_FUSED_ADAM
        return torch.optim.Adam(
            model.parameters(), lr=lr, betas=(0.7, 0.9), foreach=None if fused else True, fused=fused or None
        )
    return NesterovSGD(model.parameters(), lr=lr_value, momentum=0.9, weight_decay=recipe.weight_decay)


class _TrainStep:
    """One optimisation step on the batch whose indices sit in `idx`; static shapes, so it can be captured."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        translate_px: int,
        label_smoothing: float,
        amp_dtype: torch.dtype | None,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.images, self.labels = images, labels
        self.pad, self.label_smoothing, self.amp_dtype = translate_px, label_smoothing, amp_dtype
        device = images.device
        self.idx = torch.zeros(batch_size, dtype=torch.int64, device=device)
        # Summed on the device so the loop never waits on a .item() per step.
        self.loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self._window = torch.arange(images.shape[-1] - 2 * translate_px, device=device)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather (and randomly translate) the batch from the resident uint8 images; normalize it."""
        if self.pad:
            n = self.idx.shape[0]
            # One random offset per image into the padded 32x32 canvas: a +-pad px translation.
            offsets = torch.randint(0, 2 * self.pad + 1, (2, n, 1), device=self.idx.device)
            rows = (offsets[0] + self._window).unsqueeze(2)
            cols = (offsets[1] + self._window).unsqueeze(1)
            pixels = self.images[self.idx.view(n, 1, 1), rows, cols]
        else:
            pixels = self.images.index_select(0, self.idx)
        x = normalize(pixels).contiguous(memory_format=torch.channels_last)
        return x, self.labels.index_select(0, self.idx)

    def __call__(self) -> None:
        x, y = self.batch()
        self.optimizer.zero_grad(set_to_none=True)
        # cache_enabled=False: autocast's weight-cast cache must not outlive a CUDA-graph capture.
        with torch.autocast(
            x.device.type,
            dtype=self.amp_dtype or torch.bfloat16,
            enabled=self.amp_dtype is not None,
            cache_enabled=False,
        ):
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        loss.backward()
        self.optimizer.step()
        self.loss_sum.add_(loss.detach() * y.shape[0])
        self.correct.add_((logits.detach().argmax(dim=1) == y).sum())


class _CudaGraphStep:
    """Runs a few eager warm-up steps on a side stream, then captures the step once and replays it."""

    def __init__(self, step: _TrainStep, log: Callable[[str], None]) -> None:
        self.step, self.log = step, log
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.warmed = 0
        self.capture_seconds = 0.0
        self.stream = torch.cuda.Stream()

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        if self.failed:
            self.step()
            return
        start = time.perf_counter()
        if self.warmed < _GRAPH_WARMUP_STEPS:
            # The PyTorch CUDA-graph recipe: warm up on a side stream so capture sees settled allocations.
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                self.step()
            torch.cuda.current_stream().wait_stream(self.stream)
            self.warmed += 1
        else:
            graph = torch.cuda.CUDAGraph()
            try:
                self.step.optimizer.zero_grad(set_to_none=True)
                with torch.cuda.graph(graph):
                    self.step()
            except RuntimeError as exc:  # capture is an optimisation: fall back to eager, keep training
                self.failed = True
                self.log(f"cuda graph capture failed, continuing eagerly: {exc}")
                self.step()
            else:
                self.graph = graph
                graph.replay()
        torch.cuda.synchronize()
        self.capture_seconds += time.perf_counter() - start


def _one_cycle(
    optimizer: torch.optim.Optimizer, max_lr: float, total_steps: int, pct_start: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """OneCycle (no momentum cycling); a constant LR for runs too short for a warm-up phase (smoke tests)."""
    if pct_start * total_steps <= 1:
        # OneCycleLR divides by its warm-up length, which is zero or negative here.
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start, cycle_momentum=False
    )


MODEL_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
CONFIG_FORMAT = "mnist-cnn-safetensors/1"
# The JSON config is small; a bigger file is not one this code wrote.
_MAX_CONFIG_BYTES = 64 << 10


def config_path(weights: Path) -> Path:
    """The JSON config beside a weights file."""
    return Path(weights).with_name(CONFIG_FILE)


def model_config(architecture: str, preset: str) -> dict[str, object]:
    """What a loader needs besides the weights: architecture, preset, input shape and dtypes."""
    return {"format": CONFIG_FORMAT, "architecture": architecture, "preset": preset,
            "input_shape": list(INPUT_SHAPE), "input_dtype": "uint8", "dtype": "float32",
            "num_classes": NUM_CLASSES}


def save_model(model: nn.Module, path: Path, preset: str) -> str:
    """Atomically write the weights as safetensors at `path` and the JSON config beside it; sha256 of the weights.

    safetensors holds tensors only (a JSON header and raw bytes): loading it runs no code, unlike a pickle.
    """
    from safetensors.torch import save as save_safetensors

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: the model is written as safetensors, name it *.safetensors")
    # contiguous() stores NCHW weights whatever layout training used, so the file does not depend on it.
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save_safetensors(state)
    architecture = getattr(model, "architecture", ARCHITECTURE)
    atomic_write_bytes(path, data)
    config = json.dumps(model_config(architecture, preset), indent=2, sort_keys=True).encode()
    atomic_write_bytes(config_path(path), config + b"\n")
    return hashlib.sha256(data).hexdigest()


def save_state_dict(model: nn.Module, path: Path) -> str:
    """A torch pickle checkpoint (the format before safetensors): for comparisons and scanner tests only.

    The pipeline neither writes nor loads this format; third-party torch files go through model_scan.
    """
    buffer = io.BytesIO()
    # contiguous() stores NCHW weights whatever layout training used, so the file does not depend on it.
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    architecture = getattr(model, "architecture", ARCHITECTURE)
    if architecture != ARCHITECTURE:
        state[ARCHITECTURE_KEY] = torch.tensor(list(architecture.encode()), dtype=torch.uint8)
    torch.save(state, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def _resident_data(
    images: np.ndarray, labels: np.ndarray, pad: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The split as uint8 images (padded with black for translation) and int64 labels on the device."""
    pixels = torch.from_numpy(images)
    if pad:
        pixels = F.pad(pixels, (pad, pad, pad, pad), value=0)
    return pixels.to(device).contiguous(), torch.from_numpy(labels.astype(np.int64)).to(device)


def train_model(
    config: TrainConfig,
    data_dir: Path,
    output_path: Path,
    log: Callable[[str], None] | None = None,
    digests: Mapping[str, str] | None = None,
) -> TrainResult:
    """Train on the verified train split (against `digests` when given, else SHA256SUMS); save the state dict."""
    emit = log or (lambda _msg: None)
    recipe = config.recipe
    epochs, batch_size = int(config.epochs or recipe.epochs), int(config.batch_size or recipe.batch_size)
    learning_rate = float(config.learning_rate or recipe.learning_rate)
    device = resolve_device(config.device)
    split = load_split(Path(data_dir), "train", limit=config.max_train_samples, digests=digests)
    num_samples = len(split)
    # Drop the last partial batch: every step has the same shape (one CUDA graph, no odd-sized
    # last step whose noisier gradient lands at the lowest LR); a fresh shuffle drops other images each epoch.
    batch_size = min(batch_size, num_samples)
    steps_per_epoch = num_samples // batch_size
    amp_dtype = amp_dtype_for(device, config.precision)
    use_graph = config.cuda_graph and device.type == "cuda"

    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    threads_why = ""
    if device.type == "cpu":
        threads, threads_why = training_threads()
        torch.set_num_threads(threads)
        # Denormal floats take a slow path in fp32 CPU arithmetic: one fp32 run in three took 7 s instead of 4.5 s
        # (late in training, tiny gradients and Adam moments underflow into them). Flushed to zero, the slow
        # path is gone; a value below 1.2e-38 changes no prediction. bf16 on AMX flushes them anyway.
        torch.set_flush_denormal(True)
    if device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; read when the CUDA context first uses it.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    try:
        torch.use_deterministic_algorithms(config.deterministic, warn_only=True)
        # Deterministic mode also NaN-fills every torch.empty by default: ~7 extra full-tensor writes per
        # step, +10 to 50 % CPU step time. Nothing here reads uninitialised memory, so skip the fill.
        torch.utils.deterministic.fill_uninitialized_memory = False
        set_seed(config.seed)
        versions = library_versions()
        emit(
            f"seed={config.seed} device={device} threads={torch.get_num_threads()} ({threads_why or 'cuda'}) "
            f"samples={num_samples} "
            f"preset={recipe.name} architecture={recipe.architecture} amp={amp_dtype} cuda_graph_used={use_graph} "
            f"deterministic={config.deterministic} steps/epoch={steps_per_epoch} versions={versions} "
            f"config={config.to_dict()}"
        )
        # Whole split resident on the device as uint8: indexing beats a per-item DataLoader by an order
        # of magnitude at this model size (tuomaso/train_mnist_fast's ablation: 30.3 s to 7.31 s); normalising a gathered batch
        # costs far less than the step.
        images, labels = _resident_data(split.images, split.labels, recipe.translate_px, device)

        # channels_last roughly halves the CPU step (oneDNN's NHWC conv and pool kernels are much faster
        # than NCHW at these sizes) and is what tensor cores want on CUDA.
        model = build_model(recipe.architecture).to(device, memory_format=torch.channels_last)
        optimizer = _build_optimizer(model, recipe, learning_rate, device, use_graph)
        scheduler = _one_cycle(optimizer, learning_rate, epochs * steps_per_epoch, recipe.pct_start)
        step = _TrainStep(
            model,
            optimizer,
            images,
            labels,
            batch_size,
            recipe.translate_px,
            recipe.label_smoothing,
            amp_dtype,
        )
        runner: Callable[[], None] = _CudaGraphStep(step, emit) if use_graph else step
        # A dedicated CPU generator keeps the shuffle order independent of any other RNG consumer.
        shuffle_gen = torch.Generator().manual_seed(config.seed)
        trained_per_epoch = steps_per_epoch * batch_size

        # Unpinned CPU runs follow the load: fewer threads while another process keeps a core busy.
        governor = None
        if device.type == "cpu" and not pinned_threads() and (budget := cpu_budget()) > 1:
            governor = ThreadGovernor(torch.get_num_threads(), budget, torch.set_num_threads, emit)
        history: list[EpochMetrics] = []
        train_start = time.perf_counter()
        model.train()
        for epoch in range(1, epochs + 1):
            epoch_start = time.perf_counter()
            order = torch.randperm(num_samples, generator=shuffle_gen)[:trained_per_epoch]
            order = order.view(steps_per_epoch, batch_size).to(device)
            step.loss_sum.zero_()
            step.correct.zero_()
            for s in range(steps_per_epoch):
                step.idx.copy_(order[s])
                runner()
                scheduler.step()
                if governor is not None:
                    governor.step()
            epoch_loss = step.loss_sum.item() / trained_per_epoch
            epoch_acc = step.correct.item() / trained_per_epoch
            seconds = time.perf_counter() - epoch_start
            metrics = EpochMetrics(
                epoch=epoch,
                loss=epoch_loss,
                train_accuracy=epoch_acc,
                images_per_second=trained_per_epoch / seconds if seconds > 0 else float("inf"),
                seconds=seconds,
            )
            history.append(metrics)
            eta = (time.perf_counter() - train_start) / epoch * (epochs - epoch)
            emit(
                f"epoch {epoch}/{epochs} loss={epoch_loss:.4f} train_acc={epoch_acc:.4f} "
                f"images/s={metrics.images_per_second:,.0f} epoch_s={seconds:.2f} eta_s={eta:.1f}"
            )
        train_seconds = time.perf_counter() - train_start
        graph_used = isinstance(runner, _CudaGraphStep) and runner.graph is not None
        capture_seconds = runner.capture_seconds if isinstance(runner, _CudaGraphStep) else 0.0
        sha256 = save_model(model, Path(output_path), recipe.name)
        emit(f"saved {output_path} sha256={sha256} train_s={train_seconds:.2f}")
        return TrainResult(
            model_path=str(output_path),
            sha256=sha256,
            model_config=str(config_path(Path(output_path))),
            epochs=tuple(history),
            train_seconds=train_seconds,
            num_train_samples=num_samples,
            device=str(device),
            parameters=count_parameters(model),
            data_digests=dict(split.digests),
            preset=recipe.name,
            architecture=recipe.architecture,
            deterministic=torch.are_deterministic_algorithms_enabled(),
            threads=torch.get_num_threads(),
            thread_changes=tuple(governor.changes) if governor is not None else (),
            amp_dtype=str(amp_dtype).removeprefix("torch.") if amp_dtype is not None else None,
            cuda_graph=graph_used,
            capture_seconds=capture_seconds,
            steps_per_epoch=steps_per_epoch,
            torch_version=torch.__version__,
            versions=versions,
        )
    finally:
        torch.set_num_threads(previous_threads)
        if device.type == "cpu":
            torch.set_flush_denormal(False)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill


def train_in_process(
    *, config: Mapping[str, object], data_dir: Path, output: Path, digests: Mapping[str, str]
) -> dict[str, object]:
    """Train in this process on exactly the validated files; the same dict the training image reports."""
    resolved = TrainConfig.from_params(config)
    result = train_model(resolved, Path(data_dir), Path(output), log=print, digests=digests)
    return {**result.to_dict(), "config": resolved.to_dict(), "container": None}


def read_architecture(state: Mapping[str, torch.Tensor]) -> str:
    """The architecture a saved state dict was trained with (files without the key are fast99)."""
    tag = state.get(ARCHITECTURE_KEY)
    if tag is None:
        return ARCHITECTURE
    if tag.dtype != torch.uint8 or tag.dim() != 1:
        raise ValueError(f"{ARCHITECTURE_KEY} must be a 1-D uint8 tensor, got {tag.dtype} {tuple(tag.shape)}")
    return bytes(tag.tolist()).decode("utf-8", errors="replace")


def _read_config(path: Path) -> dict[str, object]:
    """The model's JSON config, checked field by field."""
    from include.mlops.signing import ModelSignatureError, _read_regular

    try:
        raw = _read_regular(path, _MAX_CONFIG_BYTES)
        config = json.loads(raw.decode("utf-8"))
    except (ModelSignatureError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"{path}: not a readable model config ({exc})") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: the model config is not a JSON object")
    expected = model_config(str(config.get("architecture")), str(config.get("preset")))
    if set(config) != set(expected):
        raise ModelFileError(f"{path}: model config keys {sorted(config)} are not {sorted(expected)}")
    if config["architecture"] not in ARCHITECTURES:
        raise ModelFileError(f"{path}: unknown architecture {config['architecture']!r} (known: {sorted(ARCHITECTURES)})")
    if config["preset"] not in PRESETS:
        raise ModelFileError(f"{path}: unknown preset {config['preset']!r}")
    for key in ("format", "input_shape", "input_dtype", "dtype", "num_classes"):
        if config[key] != expected[key]:
            raise ModelFileError(f"{path}: model config {key} is {config[key]!r}, this loader reads {expected[key]!r}")
    return config


def load_model(path: Path) -> nn.Module:
    """Rebuild the saved architecture on CPU in eval mode from model.safetensors and model.json; never unpickles.

    `path` is the weights file or the directory holding both. The safetensors header is checked strictly
    (include.mlops.model_scan) before the tensors are read, from the same bytes.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    from include.mlops.model_scan import DEFAULT_LIMITS, UnsafeModelFileError, safetensors_header
    from include.mlops.signing import ModelSignatureError, _read_regular

    path = Path(path)
    weights = path / MODEL_FILE if path.is_dir() else path
    if weights.suffix != ".safetensors":
        raise ModelFileError(f"{weights}: only safetensors model files are loaded (torch pickles are not)")
    config = _read_config(config_path(weights))
    try:
        data = _read_regular(weights, DEFAULT_LIMITS.max_file_bytes)
        header = safetensors_header(data, str(weights))
    except (ModelSignatureError, UnsafeModelFileError) as exc:
        raise ModelFileError(str(exc)) from None
    architecture = str(config["architecture"])
    model = build_model(architecture)
    expected = {k: (v.dtype, tuple(v.shape)) for k, v in model.state_dict().items()}
    if set(header["tensors"]) != set(expected):
        raise ModelFileError(f"{weights}: tensor names differ from {architecture}'s: missing "
                             f"{sorted(set(expected) - set(header['tensors']))}, "
                             f"unexpected {sorted(set(header['tensors']) - set(expected))}")
    try:
        state = load_safetensors(data)
    except (SafetensorError, RuntimeError, ValueError) as exc:
        raise ModelFileError(f"{weights}: not a loadable safetensors file ({exc})") from None
    differing = sorted(k for k, v in state.items() if (v.dtype, tuple(v.shape)) != expected[k])
    if differing:
        raise ModelFileError(f"{weights}: tensors {differing} differ in dtype or shape from {architecture}'s")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{weights}: weights do not match {architecture} ({exc})") from None
    return model.eval()
