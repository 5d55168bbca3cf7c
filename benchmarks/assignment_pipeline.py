"""A faithful re-creation of the assignment's training script, as the baseline for benchmarks/end_to_end.py.

torchvision's MNIST dataset with a per-sample ToTensor + Normalize transform, a DataLoader with batch 64 and
shuffle, the same network, Adam at lr 1e-3, one epoch, then the test-set accuracy.

    python benchmarks/assignment_pipeline.py [--data_dir data]
"""

import argparse

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from mnist_lite.network import CompactCNN
from mnist_lite.training import data_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="data")
    args = parser.parse_args()
    data_source.prepare(args.data_dir)  # the assignment downloaded; here the files come from the bundle
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = datasets.MNIST(args.data_dir, train=True, download=False, transform=transform)
    test = datasets.MNIST(args.data_dir, train=False, download=False, transform=transform)
    torch.manual_seed(1)
    net = CompactCNN()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for images, labels in DataLoader(train, batch_size=64, shuffle=True):
        optimizer.zero_grad()
        F.cross_entropy(net(images), labels).backward()
        optimizer.step()
    net.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in DataLoader(test, batch_size=1000):
            correct += (net(images).argmax(1) == labels).sum().item()
    print(f"assignment pipeline test accuracy: {correct / len(test):.2%}")


if __name__ == "__main__":
    main()
