"""Nearest-neighbour searches for the memorisation check: two nearest keys, in chunks, duplicates found by hash.

Pure functions of tensors. Keys may stay uint8 (the training images as the data holds them): each
chunk of keys is turned into float rows only while it is compared, so no float32 copy of the training
set is ever held (a float copy is 4x the uint8 images that data.memory_budget bounds).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

CHUNK = 256  # query rows at a time
KEY_CHUNK = 8192  # key rows at a time: 256 x 8192 float32 distances = 8 MB, 8192 x 784 float32 keys = 26 MB

Rows = Callable[[Tensor], Tensor]  # a chunk of stored keys -> float rows (identity for features)


@torch.no_grad()
def two_nearest(queries: Tensor, keys: Tensor, rows: Rows = lambda x: x, keep: Tensor | None = None,
                self_index: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each query's distances to its nearest and second-nearest keys, and their indices (into `keep`'s order).

    keys[keep] are the keys searched (None: all), turned into float rows by rows() a chunk at a time;
    self_index[i]: the position in keep that is query i itself, left out (a training image is not its
    own neighbour).
    """
    keep = torch.arange(len(keys), device=keys.device) if keep is None else keep
    if len(keep) < 2:
        raise ValueError(f"two nearest keys need at least 2 keys, got {len(keep)}")
    out = ([], [], [], [])
    for start in range(0, len(queries), CHUNK):
        query = queries[start:start + CHUNK].float()
        best = torch.full((len(query), 2), math.inf, device=query.device)
        best_index = torch.zeros((len(query), 2), dtype=torch.long, device=query.device)
        for key_start in range(0, len(keep), KEY_CHUNK):
            # float32 matrix-product distances: an exact copy comes out within ~1e-3 of 0 (cancellation in
            # |a|^2 + |b|^2 - 2ab), far below any distance between two different images
            block = torch.cdist(query, rows(keys[keep[key_start:key_start + KEY_CHUNK]]).float())
            if self_index is not None:
                own = self_index[start:start + CHUNK] - key_start
                inside = (own >= 0) & (own < block.shape[1])
                block[inside.nonzero().squeeze(1), own[inside]] = math.inf
            k = min(2, block.shape[1])
            values, indices = block.topk(k, dim=1, largest=False)
            merged, order = torch.cat([best, values], 1).topk(2, dim=1, largest=False)
            best, best_index = merged, torch.cat([best_index, indices + key_start], 1).gather(1, order)
        for found, value in zip(out, (best[:, 0], best_index[:, 0], best[:, 1], best_index[:, 1])):
            found.append(value)
    d1, i1, d2, i2 = (torch.cat(found) for found in out)
    return d1, i1, d2, i2


def either_orientation(found: tuple[Tensor, ...], mirrored: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest distance, its key and the second-nearest distance to a *different* key, over a query and its mirror.

    found, mirrored: two_nearest()'s (d1, i1, d2, i2) for the queries and for their mirror images. A
    flipped copy is a copy: each key's distance is the smaller of the two orientations'.
    """
    values = torch.stack([found[0], found[2], mirrored[0], mirrored[2]], 1)
    indices = torch.stack([found[1], found[3], mirrored[1], mirrored[3]], 1)
    d1, which = values.min(1)
    i1 = indices.gather(1, which[:, None]).squeeze(1)
    # the nearest different key is among these four: each orientation's two nearest are two different keys
    d2 = values.masked_fill(indices == i1[:, None], math.inf).min(1).values
    return d1, i1, d2


def distinct(images: Tensor, chunk: int = 4096) -> Tensor:
    """Indices of the first occurrence of each distinct image (byte for byte), in their order.

    Rows are hashed to int64 with random weights (wrapping multiplication: a collision between two
    different images has probability about 2^-63 a pair), so no sorted copy of the images is made.
    """
    flat_size = images[0].numel() if len(images) else 0
    weights = torch.randint(-2**62, 2**62, (flat_size,), generator=torch.Generator().manual_seed(0))
    weights = weights.to(images.device)
    hashes = torch.cat([(images[i:i + chunk].flatten(1).long() * weights).sum(1)
                        for i in range(0, len(images), chunk)]) if len(images) else torch.zeros(0, dtype=torch.long)
    _, inverse = torch.unique(hashes, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1 if len(inverse) else 0,), len(images), device=images.device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(images), device=images.device), "amin")
    return first.sort().values


def mann_whitney_z(x: Tensor, y: Tensor) -> float:
    """The Mann-Whitney U statistic of x against y as a z-score: negative when x tends to be smaller than y.

    U counts the pairs (x_i, y_j) with x_i > y_j, ties counting one half; under x ~ y it has mean
    mn/2 and variance mn(m + n + 1)/12 (no tie correction).
    """
    m, n = len(x), len(y)
    ordered = y.double().sort().values
    below = torch.searchsorted(ordered, x.double(), right=False)
    up_to = torch.searchsorted(ordered, x.double(), right=True)
    u = (below + 0.5 * (up_to - below)).sum().item()
    return (u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12)


def kmeans_cells(points: Tensor, cells: int, iterations: int = 20, seed: int = 0) -> Tensor:
    """k-means (Lloyd's) centres of points, from a seeded random start: the partition of Meehan et al.'s C_T."""
    start = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))[:cells]
    centres = points[start.to(points.device)].double()
    x = points.double()
    for _ in range(iterations):
        assign = torch.cdist(x, centres).argmin(1)
        for c in range(len(centres)):
            members = x[assign == c]
            if len(members):
                centres[c] = members.mean(0)
    return centres
