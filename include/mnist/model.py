"""The MNIST CNNs (fast99 for the nightly run, fast995 for the quality preset) and their input normalization."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

# The original fast99 widths; also what a state dict without an architecture tag is (files from before the tag).
ARCHITECTURE = "fast99-cnn"
# fast99 with narrower convolutions: the nightly network until the strided one replaced it; its files still load.
NARROW_ARCHITECTURE = "fast99-narrow-cnn"
# The nightly (fast preset) network: a strided first convolution instead of convolution + pooling.
FAST_ARCHITECTURE = "fast99-strided-cnn"
QUALITY_ARCHITECTURE = "fast995-bn-cnn"
# Mean and std of the MNIST training pixels scaled to [0, 1]; the model was designed around these.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
# A black (0) pixel after normalize(): the fill value when an image is shifted.
BACKGROUND = -MNIST_MEAN / MNIST_STD
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

    architecture: ClassVar[str] = ARCHITECTURE
    widths: ClassVar[tuple[int, int]] = (24, 32)

    def __init__(self) -> None:
        super().__init__()
        c1, c2 = self.widths
        self.conv1 = nn.Conv2d(1, c1, kernel_size=5)  # 28 -> 24, pooled to 12
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3)  # 12 -> 10, pooled to 5
        self.fc1 = nn.Linear(c2 * 5 * 5, 256)
        self.fc2 = nn.Linear(256, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pooling before ReLU gives the same result as after (both monotone) on a 4x smaller tensor.
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


class NarrowCNN(MnistCNN):
    """fast99 with 16 and 24 conv channels: about 30 % less CPU time per step at the same accuracy."""

    # The 24x24 first-layer activations and their max-pool are the largest cost of a CPU step. Over seeds
    # 42, 1, 2 and 3 to 6 (bf16 on the 2-core runner) both widths reach a mean of 99.01 %.

    architecture: ClassVar[str] = NARROW_ARCHITECTURE
    widths: ClassVar[tuple[int, int]] = (16, 24)


class StridedCNN(nn.Module):
    """Conv(1→24,5x5,stride 2)-ReLU-Conv(24→32,3x3)-MaxPool-ReLU-FC800→256-ReLU-FC10; returns logits."""

    # A stride-2 first convolution replaces convolution + max-pool ("Striving for Simplicity: The All Convolutional
    # Net", Springenberg et al., 2015): it computes a quarter of the first layer's outputs and drops the largest
    # pooling, whose forward, backward and zero-filled gradient were over a third of a CPU step. No padding: MNIST
    # centres each digit in the middle 20x20 pixels, so the border holds nothing to find. With label smoothing it
    # trains to a higher accuracy in one epoch than NarrowCNN did, in less time (bench/bench_training.py).

    architecture: ClassVar[str] = FAST_ARCHITECTURE
    widths: ClassVar[tuple[int, int]] = (24, 32)

    def __init__(self) -> None:
        super().__init__()
        c1, c2 = self.widths
        self.conv1 = nn.Conv2d(1, c1, kernel_size=5, stride=2)  # 28 -> 12
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3)  # 12 -> 10, pooled to 5
        self.fc1 = nn.Linear(c2 * 5 * 5, 256)
        self.fc2 = nn.Linear(256, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    # No conv bias: the BatchNorm shift that follows makes it redundant.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def shifted_views(x: torch.Tensor) -> torch.Tensor:
    """The batch and its four 1-pixel shifts (background fill), stacked as (5N, C, H, W)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), value=BACKGROUND)
    # Crop offsets: identity, then the content moved right, left, down, up by one pixel.
    offsets = ((1, 1), (1, 0), (1, 2), (0, 1), (2, 1))
    return torch.cat([padded[..., dy : dy + h, dx : dx + w] for dy, dx in offsets])


class BnCNN(nn.Module):
    """fast995: 5x[Conv3x3-BN-ReLU] (32, 32 | pool | 64, 64 | pool | 128), global max-pool, FC; logits.

    In eval mode the logits are averaged over the input and its four 1-px shifts (5-view TTA), so the
    served model is exactly the evaluated one.
    """

    architecture: ClassVar[str] = QUALITY_ARCHITECTURE
    tta_views: ClassVar[int] = 5

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(1, 32),
            _conv_bn(32, 32),
            nn.MaxPool2d(2),
            _conv_bn(32, 64),
            _conv_bn(64, 64),
            nn.MaxPool2d(2),
            _conv_bn(64, 128),
        )
        self.fc = nn.Linear(128, NUM_CLASSES)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.amax(self.features(x), dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self._logits(x)
        n = x.shape[0]
        return self._logits(shifted_views(x)).view(self.tta_views, n, NUM_CLASSES).mean(dim=0)


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    ARCHITECTURE: MnistCNN,
    NARROW_ARCHITECTURE: NarrowCNN,
    FAST_ARCHITECTURE: StridedCNN,
    QUALITY_ARCHITECTURE: BnCNN,
}


def build_model(architecture: str = ARCHITECTURE) -> nn.Module:
    """A freshly initialised model of the named architecture (seed the RNG first for reproducible weights)."""
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}"
        ) from None
    return factory()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters in the model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
