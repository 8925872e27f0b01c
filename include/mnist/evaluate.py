"""Evaluate a saved MNIST model (fast99 or the quality BN CNN) on the verified MNIST test split."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from include.mnist.data import load_split
from include.mnist.model import NUM_CLASSES, normalize
from include.mnist.train import load_model, resolve_device


@dataclass(frozen=True)
class EvalResult:
    """Test accuracy, mean loss and per-class accuracy (keys '0'..'9'; NaN for a class with no samples)."""

    accuracy: float
    loss: float
    num_samples: int
    per_class_accuracy: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        """A JSON-able copy for XCom or MLflow."""
        return asdict(self)


def predict(
    model: torch.nn.Module, images: np.ndarray, batch_size: int = 1000, device: str = "auto"
) -> np.ndarray:
    """Logits (N, 10) float32 for uint8 images (N, 28, 28)."""
    dev = resolve_device(device)
    model = model.to(dev, memory_format=torch.channels_last).eval()
    # A TTA model runs every image several times: shrink the chunk so activations stay the same size.
    chunk = max(1, batch_size // int(getattr(model, "tta_views", 1)))
    outputs = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], chunk):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk]))
            x = normalize(batch).to(dev, memory_format=torch.channels_last)
            outputs.append(model(x).float().cpu())
    if not outputs:
        return np.zeros((0, NUM_CLASSES), dtype=np.float32)
    return torch.cat(outputs).numpy()


def evaluate_model(
    model_path: Path,
    data_dir: Path,
    max_samples: int | None = None,
    batch_size: int = 1000,
    device: str = "auto",
    digests: Mapping[str, str] | None = None,
) -> EvalResult:
    """Accuracy and loss of the model file on the first max_samples test records (all when None or 0).

    `digests` (validate_data's) are the reference the test files must match; without them SHA256SUMS and the
    pinned data manifests are.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    model = load_model(Path(model_path))
    split = load_split(Path(data_dir), "test", limit=max_samples or None, digests=digests)
    logits = torch.from_numpy(predict(model, split.images, batch_size=batch_size, device=device))
    labels = torch.from_numpy(split.labels.astype(np.int64))
    loss = F.cross_entropy(logits, labels, reduction="mean").item()
    hits = (logits.argmax(dim=1) == labels).numpy()
    label_np = labels.numpy()
    totals = np.bincount(label_np, minlength=NUM_CLASSES)
    correct = np.bincount(label_np, weights=hits.astype(np.float64), minlength=NUM_CLASSES)
    per_class = {
        str(c): (float(correct[c] / totals[c]) if totals[c] else float("nan")) for c in range(NUM_CLASSES)
    }
    return EvalResult(
        accuracy=float(hits.mean()),
        loss=float(loss),
        num_samples=int(label_np.shape[0]),
        per_class_accuracy=per_class,
    )
