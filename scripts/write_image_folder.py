"""Write MNIST or Fashion-MNIST as an ImageFolder tree of PNGs: <out>/<class name>/<index>.png.

The docs' example of data=folder, and the folder scripts/folder_bench.py trains from:

    python scripts/write_image_folder.py --data fashion_mnist --root ../shared/data --out /tmp/fashion
    gan-lab train data=folder data.path=/tmp/fashion data.resolution=32 model.conditional=true threads=1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from gan_lab.data import import_torchvision

DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def write_image_folder(data: str, root: str, out: Path, limit: int | None = None) -> int:
    """Write the training split's first `limit` images (all when None) as class folders; the number written."""
    torchvision = import_torchvision()
    ds = getattr(torchvision.datasets, DATASETS[data])(root=root, train=True, download=False)
    n = len(ds.data) if limit is None else min(limit, len(ds.data))
    names = [name.replace("/", "-") for name in ds.classes]  # "T-shirt/top" is one folder
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(ds.data[i].numpy()).save(out / names[int(ds.targets[i])] / f"{i:05d}.png")
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=sorted(DATASETS), default="fashion_mnist")
    parser.add_argument("--root", default="data", help="the folder holding MNIST/ or FashionMNIST/ (torchvision)")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write the class folders into")
    parser.add_argument("--limit", type=int, default=None, help="write only the first N images")
    args = parser.parse_args()
    n = write_image_folder(args.data, args.root, args.out, args.limit)
    print(f"wrote {n:,} images of {args.data} into {args.out}")


if __name__ == "__main__":
    main()
