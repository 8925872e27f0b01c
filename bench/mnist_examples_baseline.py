"""The pytorch/examples mnist/main.py training loop, rebuilt from its description for side-by-side timing.

What it reproduces (pytorch/examples mnist/main.py): the 1,199,882-parameter `Net`, Adadelta(lr=1.0),
StepLR(step_size=1, gamma=0.7), batch 64, test batch 1000, one image at a time through a DataLoader with
the ToTensor + Normalize((0.1307,), (0.3081,)) transform (emulated with torch ops instead of PIL, which is
slightly cheaper than the real thing), no shuffling on CPU, loss.item() every 10 batches for the log line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

BASELINE_PARAMETERS = 1_199_882
LOG_INTERVAL = 10


class Net(nn.Module):
    """Conv(1→32,3)-ReLU-Conv(32→64,3)-ReLU-MaxPool2-Dropout.25-FC9216→128-ReLU-Dropout.5-FC10-log_softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


class PerItemMnist(Dataset):
    """uint8 MNIST arrays served one item at a time with a ToTensor + Normalize equivalent."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # ToTensor: HxW uint8 -> 1xHxW float in [0, 1]; then Normalize with the published mean/std.
        x = torch.from_numpy(self.images[index]).to(torch.float32).div(255.0).unsqueeze(0)
        return (x - 0.1307) / 0.3081, int(self.labels[index])


@dataclass(frozen=True)
class BaselineEpoch:
    """One main.py epoch: train time, test time and test accuracy after it."""

    epoch: int
    train_seconds: float
    test_seconds: float
    test_accuracy: float
    test_loss: float


def run_baseline(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    max_epochs: int = 14,
    seed: int = 1,
) -> Iterator[BaselineEpoch]:
    """Yield main.py's epochs one by one (train, then test), so a caller can interleave other work."""
    torch.manual_seed(seed)
    model = Net()
    train_loader = DataLoader(PerItemMnist(train_images, train_labels), batch_size=64)
    test_loader = DataLoader(PerItemMnist(test_images, test_labels), batch_size=1000)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    for epoch in range(1, max_epochs + 1):
        # Re-seed from (seed, epoch): interleaved work in the same process cannot change the dropout masks.
        torch.manual_seed(seed * 1000 + epoch)
        start = time.perf_counter()
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            if batch_idx % LOG_INTERVAL == 0:
                loss.item()  # main.py formats this into its progress line
        train_seconds = time.perf_counter() - start

        start = time.perf_counter()
        model.eval()
        test_loss, correct = 0.0, 0
        with torch.no_grad():
            for data, target in test_loader:
                output = model(data)
                test_loss += F.nll_loss(output, target, reduction="sum").item()
                correct += int((output.argmax(dim=1) == target).sum().item())
        test_seconds = time.perf_counter() - start
        scheduler.step()
        n = len(test_loader.dataset)  # type: ignore[arg-type]
        yield BaselineEpoch(epoch, train_seconds, test_seconds, correct / n, test_loss / n)
