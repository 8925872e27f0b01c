"""What the ops layer needs to know about one model; the model package supplies it (e.g. include/mnist/spec.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from include.mlops.drift_model import ModelViewer
    from include.mlops.mlbom import DatasetSpec, ModelCard


@dataclass(frozen=True)
class ModelSpec:
    """A model as the ops layer sees it: callables and facts, so that include/mlops never imports a model."""

    name: str  # the model family, e.g. "mnist": names its datasets and pipelines
    # weights file -> the torch module in eval mode (weights only, never arbitrary pickles)
    load: Callable[[Path], Any]
    # a batch the model accepts, for MLflow's signature
    example_input: Callable[[], np.ndarray]
    # architecture -> the ML-BOM's model card
    card: Callable[[str], ModelCard]
    # ({file: sha256}, source URL or path, {split: records}) -> the ML-BOM's datasets
    datasets: Callable[[Mapping[str, str], str, Mapping[str, int] | None], list[DatasetSpec]]
    # (weights, data dir, sample cap) -> {"accuracy", "loss", "num_samples", ...} on the held-out test set
    evaluate: Callable[[Path, Path, int | None, Mapping[str, str] | None], dict[str, Any]]
    # weights -> the model's view of raw images (embeddings, predicted class, confidence), for drift features
    viewer: Callable[[Path], ModelViewer]
    # data dir -> {"data_dir", "digests": {file: sha256}, "counts": {split: records}, ...} after every check
    validate_data: Callable[[Path], dict[str, Any]]
    # data dir -> the raw training images a drift reference is drawn from
    training_images: Callable[[Path], np.ndarray]
    image_shape: Sequence[int]  # one raw input image, e.g. (28, 28)
    num_classes: int
    runtime_packages: tuple[str, ...]  # distributions the model needs to run: pinned in MLflow, closure in the ML-BOM
