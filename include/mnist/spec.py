"""The MNIST CNN as the ops layer sees it: loader, example input, model card, datasets, evaluation and drift view."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from include.mlops.drift_model import ModelView, ModelViewer
from include.mlops.mlbom import DatasetSpec, ModelCard
from include.mlops.model_spec import ModelSpec
from include.mnist.data import IMAGE_SHAPE, NUM_CLASSES

# File-name prefix of each split (t10k is the published name of the test split).
_SPLIT_OF_PREFIX = {"train": "train", "t10k": "test", "test": "test"}


def load(path: Path) -> Any:
    """The saved CNN (either architecture) on CPU in eval mode, from model.safetensors and model.json (no pickle)."""
    from include.mnist.train import load_model

    return load_model(Path(path))


def example_input() -> np.ndarray:
    """Two blank normalised-size images: two rows, so torch.export keeps the batch dimension free."""
    return np.zeros((2, 1, *IMAGE_SHAPE), dtype=np.float32)


def model_card(architecture: str) -> ModelCard:
    """The ML-BOM model card of the MNIST digit classifier trained with `architecture`."""
    return ModelCard(
        architecture=architecture,
        description=f"PyTorch {architecture} MNIST digit classifier: safetensors weights, JSON config, signed",
        task="image-classification",
        architecture_family="convolutional neural network",
        inputs=("uint8 grayscale images (N, 1, 28, 28), normalized to float32 with MNIST mean 0.1307 and std 0.3081",),
        outputs=("float32 logits (N, 10) over the digits 0-9",),
        users=("ML engineers of this pipeline", "demo and teaching audiences"),
        use_cases=("classifying centred 28x28 grayscale handwritten digits",),
        limitations=(
            "trained on MNIST only: off-centre, rotated, colour or non-digit inputs are out of distribution",
            "the weights load only into the architecture recorded in model.json, after the signature verifies",
        ),
        tradeoffs=("a small CNN chosen for CPU training speed over the last 0.5% accuracy",),
        ethical=((
            "handwriting may identify writers",
            "MNIST is a public benchmark; do not fine-tune on personal documents without consent",
        ),),
    )


def datasets(digests: Mapping[str, str], source: str, counts: Mapping[str, int] | None = None) -> list[DatasetSpec]:
    """Group the MNIST file digests ({'train-images-idx3-ubyte.gz': sha256, ...}) into train and test datasets."""
    grouped: dict[str, list[tuple[str, str]]] = {}
    for name, digest in sorted(digests.items()):
        split = _SPLIT_OF_PREFIX.get(name.split("-", 1)[0])
        if split is None:
            raise ValueError(f"dataset file {name!r} is neither train-* nor t10k-*/test-*")
        grouped.setdefault(split, []).append((name, digest))
    counts = counts or {}
    return [
        DatasetSpec(f"mnist-{split}", tuple(files), source, counts.get(split), f"MNIST {split} split")
        for split, files in sorted(grouped.items())
    ]


def evaluate(model_path: Path, data_dir: Path, max_samples: int | None = None,
             digests: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Accuracy, loss and per-class accuracy on the test split, whose files must have `digests` when given."""
    from include.mnist.evaluate import evaluate_model

    return evaluate_model(Path(model_path), Path(data_dir), max_samples=max_samples, digests=digests).to_dict()


def viewer(model_path: Path) -> ModelViewer:
    """The CNN's view of raw uint8 images (N, 28, 28): embeddings before its last layer, class and confidence."""
    from include.mlops.drift_model import model_view
    from include.mnist.model import normalize

    model = load(model_path)

    def view(images: np.ndarray) -> ModelView:
        return model_view(model, images, normalize)

    return view


def validate_data(data_dir: Path) -> dict[str, Any]:
    """Checksums, IDX format, record counts and label range of the four files, as a JSON-able report."""
    from include.mnist.data import validate_dataset

    return validate_dataset(Path(data_dir)).to_dict()


def training_images(data_dir: Path) -> np.ndarray:
    """The verified training split's images, from which a drift reference is drawn."""
    from include.mnist.data import load_split

    return load_split(Path(data_dir), "train").images


MNIST = ModelSpec(
    name="mnist",
    load=load,
    example_input=example_input,
    card=model_card,
    datasets=datasets,
    evaluate=evaluate,
    viewer=viewer,
    validate_data=validate_data,
    training_images=training_images,
    image_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    runtime_packages=("torch", "numpy"),
)
