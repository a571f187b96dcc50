"""`python scripts/textbook_loop.py --root DIR [--epochs N] [--workers W] [--device D] [--threads T]`: the textbook
training loop, as a user writes it, for scripts/bench.py to time as a whole process against `python -m src.train`.

torchvision's `FashionMNIST` with `ToTensor` and `Normalize`, a shuffling `DataLoader`, the same LeNet, SGD (lr 0.1,
momentum 0.9) under torch's linear warmup then cosine decay stepped per batch (what src.train runs by default),
`.item()` on the loss and the accuracy at every step, the test set after every epoch and one line printed per
epoch. `DIR` holds `FashionMNIST/raw/`. Nothing is timed here; the bench also uses `loaders` and `one_epoch` to time
a single epoch inside its own process.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.datasets import FashionMNIST

from src.training.models import LeNet

MEAN, STD = 0.2860, 0.3530


def loaders(
    root: str,
    *,
    batch_size: int = 256,
    eval_batch_size: int = 500,
    workers: int = 0,
    train_size: int | None = None,
    mean: float = MEAN,
    std: float = STD,
) -> tuple[DataLoader, DataLoader]:
    """A shuffling training loader and a test loader over torchvision's dataset, images through ToTensor."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    train_set = FashionMNIST(root, train=True, transform=transform)
    if train_size is not None:
        train_set = Subset(train_set, range(train_size))
    test_set = FashionMNIST(root, train=False, transform=transform)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=workers)
    test_loader = DataLoader(test_set, batch_size=eval_batch_size, num_workers=workers)
    return train_loader, test_loader


def one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: DataLoader,
    test_loader: DataLoader,
    device: torch.device,
    after_step: Callable[[], None],
) -> dict[str, float]:
    """Train on every batch (reading the loss and the accuracy at every step), then evaluate on the test set."""
    model.train()
    train_loss = train_correct = 0.0
    for images, labels in train_loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        after_step()
        train_loss += loss.item() * len(labels)
        train_correct += (logits.argmax(dim=1) == labels).sum().item()
    model.eval()
    test_loss = test_correct = 0.0
    with torch.no_grad():
        for images, labels in test_loader:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            test_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            test_correct += (logits.argmax(dim=1) == labels).sum().item()
    train_images, test_images = len(train_loader.dataset), len(test_loader.dataset)
    return {
        "train_loss": train_loss / train_images,
        "train_acc": train_correct / train_images,
        "test_loss": test_loss / test_images,
        "test_acc": test_correct / test_images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the folder holding FashionMNIST/raw/")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes; 0")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads; torch's default")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-batch-size", type=int, default=500)
    parser.add_argument("--train-size", type=int, default=None, help="the first N training images; all")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    train_loader, test_loader = loaders(
        args.root,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        workers=args.workers,
        train_size=args.train_size,
    )
    model = LeNet().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    total = args.epochs * len(train_loader)
    warmup = math.ceil(0.1 * total)
    scheduler = torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / (warmup + 1), total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup),
        ],
        milestones=[warmup],
    )
    for epoch in range(args.epochs):
        metrics = one_epoch(model, optimizer, train_loader, test_loader, device, scheduler.step)
        print(f"epoch {epoch + 1}/{args.epochs}: " + " ".join(f"{key} {value:.4f}" for key, value in metrics.items()))


if __name__ == "__main__":
    main()
