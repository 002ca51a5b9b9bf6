"""Garment regions of a label map: one box per class, the extent of its pixels less the specks.

The same rule makes the ground-truth boxes from CCP's masks (shazzam.ccp, at full resolution)
and the detector's boxes from its argmax label map (shazzam.detector, at stride 4), so what the
model is trained on, what it is scored against and what it serves agree. numpy only (it runs in
the Lambda layer, which has no room for scipy): connected components are found on runs of equal
pixels, row by row, with a union-find over the runs, which is fast for label maps (a few runs a
row) at any resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# A connected piece of a class smaller than this share of the photo's area is a speck: a stray
# fleck of the mask, not a garment. 0.02% of a 550x825 CCP photo is 91 pixels, a 10x10 patch.
# Measured on CCP's masks (labels mapped to detector classes): 2% of components are smaller; the
# smallest real garments are single lenses of sunglasses and thin belts, from about 0.03%.
# (The detector's own threshold, for its coarser and noisier output, is in its manifest.)
MIN_AREA_FRACTION = 0.0002


@dataclass(frozen=True)
class Region:
    """One class's kept pixels: their extent (left/top inclusive, right/bottom exclusive, in the
    label map's pixels), their count, and which of the map's pixels they are."""

    label: int
    left: int
    top: int
    right: int
    bottom: int
    area: int
    mask: np.ndarray  # bool, the label map's shape

    def box(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.right, self.bottom


def components_of_labels(label_map: np.ndarray, background: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of equal labels in a 2-D label map, all classes in one pass.

    Returns (components, classes): `components` int32 of the map's shape, 0 on background, 1..n
    elsewhere; `classes[i]` is component i's label (classes[0] = background). Runs of equal labels
    along each row are the nodes; runs of the same label touching across rows (diagonals too)
    are joined by a union-find over those contacts.
    """
    labels = np.asarray(label_map)
    if labels.ndim != 2:
        raise ValueError(f"a label map is 2-D, got shape {labels.shape}")
    height, width = labels.shape
    if labels.size == 0:
        return np.zeros(labels.shape, np.int32), np.array([background])
    starts = np.ones(labels.shape, dtype=bool)
    starts[:, 1:] = labels[:, 1:] != labels[:, :-1]
    run_of = (np.cumsum(starts.ravel()) - 1).reshape(labels.shape)
    run_label = labels.ravel()[starts.ravel()]
    runs = run_label.size
    # Contacts between a row and the next: same label, not background, at dx = -1, 0, 1.
    pairs = []
    for dx in (-1, 0, 1):
        upper = slice(max(0, -dx), width - max(0, dx))
        lower = slice(max(0, dx), width - max(0, -dx))
        a, b = labels[:-1, upper], labels[1:, lower]
        touching = (a == b) & (a != background)
        if touching.any():
            pairs.append(run_of[:-1, upper][touching].astype(np.int64) * runs + run_of[1:, lower][touching])
    parent = np.arange(runs)
    if pairs:
        codes = np.unique(np.concatenate(pairs))
        parent_list = parent.tolist()

        def find(node: int) -> int:
            while parent_list[node] != node:
                parent_list[node] = parent_list[parent_list[node]]
                node = parent_list[node]
            return node

        for a, b in zip((codes // runs).tolist(), (codes % runs).tolist()):
            root_a, root_b = find(a), find(b)
            if root_a != root_b:
                parent_list[max(root_a, root_b)] = min(root_a, root_b)
        parent = np.asarray([find(node) for node in range(runs)])
    foreground = run_label != background
    roots = np.unique(parent[foreground])
    number = np.zeros(runs, dtype=np.int32)
    number[roots] = np.arange(1, roots.size + 1, dtype=np.int32)
    component_of_run = np.where(foreground, number[parent], 0).astype(np.int32)
    classes = np.concatenate(([background], run_label[roots]))
    return component_of_run[run_of], classes


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label 8-connected components of a 2-D bool array: (labels int32, 0 = off, 1..n; n)."""
    found, classes = components_of_labels(np.asarray(mask, dtype=np.uint8))
    return found, classes.size - 1


def label_map_regions(
    label_map: np.ndarray, classes: range | list[int], min_pixels: float, min_share_of_largest: float = 0.0
) -> list[Region]:
    """One region per class of `classes` present in the label map (2-D ints): the extent of the
    class's pixels left after dropping its components of fewer than `min_pixels`, and those
    smaller than `min_share_of_largest` times the class's largest component. (The second rule is
    for a model's output, where a stray blob far from the garment would stretch its box; two
    shoes, about the same size, both stay. Ground truth uses only the first.)"""
    label_map = np.asarray(label_map)
    found, component_class = components_of_labels(label_map)
    sizes = np.bincount(found.ravel(), minlength=component_class.size)
    keep = sizes >= min_pixels
    if min_share_of_largest > 0:
        largest = np.zeros(int(component_class.max()) + 1, dtype=np.int64)
        np.maximum.at(largest, component_class, sizes)
        keep &= sizes >= min_share_of_largest * largest[component_class]
    keep[0] = False
    regions = []
    for label in classes:
        if not keep[component_class == label].any():
            continue
        kept = keep[found] & (label_map == label)
        ys = np.flatnonzero(kept.any(axis=1))
        xs = np.flatnonzero(kept.any(axis=0))
        regions.append(Region(label, int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1, int(kept.sum()), kept))
    return regions


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [left, top, right, bottom) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
