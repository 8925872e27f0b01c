"""A model's own view of a batch: penultimate-layer embeddings, predicted class and confidence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# Images in, the model's view out: what the drift features need from a model (the model package builds one).
ModelViewer = Callable[[np.ndarray], "ModelView"]


@dataclass(frozen=True)
class ModelView:
    """Per-image outputs of one model version."""

    embeddings: np.ndarray  # (N, D) float32, the input of the final linear layer
    predicted_class: np.ndarray  # (N,) int64
    confidence: np.ndarray  # (N,) float32, the top softmax probability
    num_classes: int  # width of the model's output


def model_view(model: Any, images: np.ndarray, preprocess: Callable[[Any], Any], batch_size: int = 1000) -> ModelView:
    """Run a torch classifier in eval mode on raw images and capture what its last linear layer sees."""
    import torch

    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no linear classifier head to read embeddings from")
    captured: list[torch.Tensor] = []
    hook = heads[-1].register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
    n = images.shape[0]
    embeddings, logits = [], []
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
                captured.clear()
                logits.append(model(preprocess(chunk)).float())
                seen = captured[-1]
                # A test-time-augmented model runs the head on k views of each image: average them.
                views = seen.shape[0] // chunk.shape[0]
                embeddings.append(seen.view(views, chunk.shape[0], -1).mean(dim=0).float())
    finally:
        hook.remove()
    out = torch.cat(logits)
    probs = torch.softmax(out, dim=1)
    confidence, predicted = probs.max(dim=1)
    return ModelView(
        embeddings=torch.cat(embeddings).numpy(),
        predicted_class=predicted.numpy().astype(np.int64),
        confidence=confidence.numpy().astype(np.float32),
        num_classes=int(out.shape[1]),
    )
