"""The fast99 MNIST CNN and the input normalization it expects."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURE = "fast99-cnn"
# Mean and std of the MNIST training pixels scaled to [0, 1]; the model was designed around these.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
INPUT_SHAPE: tuple[int, int, int] = (1, 28, 28)
NUM_CLASSES = 10


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Turn uint8 images (N, 28, 28) or (N, 1, 28, 28) into normalized float32 (N, 1, 28, 28)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 pixels in 0..255, got {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or tuple(images.shape[1:]) != INPUT_SHAPE:
        raise ValueError(f"normalize expects (N, 28, 28) or (N, 1, 28, 28), got {tuple(images.shape)}")
    return images.to(torch.float32).div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD)


class MnistCNN(nn.Module):
    """Conv(1→24,5x5)-MaxPool-ReLU-Conv(24→32,3x3)-MaxPool-ReLU-FC800→256-ReLU-FC10; returns logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 24, kernel_size=5)  # 28 -> 24, pooled to 12
        self.conv2 = nn.Conv2d(24, 32, kernel_size=3)  # 12 -> 10, pooled to 5
        self.fc1 = nn.Linear(32 * 5 * 5, 256)
        self.fc2 = nn.Linear(256, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pooling before ReLU gives the same result as after (both monotone) on a 4x smaller tensor.
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def build_model() -> MnistCNN:
    """A freshly initialised MnistCNN (seed the RNG first for reproducible weights)."""
    return MnistCNN()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters in the model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
