"""What bf16 costs: OpenVINO's bf16 features of the raw images against its f32 features of the
same images, and whether what the pipeline derives from them stays the same: PCA's k at the
DAG's default variance, and each image's nearest neighbour's class (the generated fruits)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fruitflow.contract import DEFAULT_VARIANCE
from fruitflow.pca import Moments, fit_pca


@dataclass(frozen=True)
class PrecisionCost:
    images: int
    max_difference: float  # max |bf16 - f32| over every feature, as a share of the largest |f32| feature
    mean_difference: float  # mean |bf16 - f32|, as a share of the largest |f32| feature
    min_cosine: float  # cosine similarity of an image's bf16 and f32 features: the lowest
    mean_cosine: float
    k_f32: int  # PCA's k at DEFAULT_VARIANCE
    k_bf16: int
    same_neighbour_class: int  # images whose nearest neighbour has the same class with bf16 as with f32


def nearest_neighbour_classes(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's nearest other image's label, by Euclidean distance between features."""
    rows = features.astype(np.float64)
    squared = (rows**2).sum(axis=1)
    distances = squared[:, None] + squared[None, :] - 2 * rows @ rows.T
    np.fill_diagonal(distances, np.inf)
    return labels[distances.argmin(axis=1)]


def precision_cost(f32: np.ndarray, bf16: np.ndarray, labels: list[str]) -> PrecisionCost:
    scale = np.abs(f32).max()
    difference = np.abs(bf16.astype(np.float64) - f32)
    cosine = (f32 * bf16).sum(axis=1) / (np.linalg.norm(f32, axis=1) * np.linalg.norm(bf16, axis=1))
    classes = np.asarray(labels)
    return PrecisionCost(
        images=len(f32),
        max_difference=float(difference.max() / scale),
        mean_difference=float(difference.mean() / scale),
        min_cosine=float(cosine.min()),
        mean_cosine=float(cosine.mean()),
        k_f32=fit_pca(Moments.of(f32), DEFAULT_VARIANCE).k,
        k_bf16=fit_pca(Moments.of(bf16), DEFAULT_VARIANCE).k,
        same_neighbour_class=int(
            (nearest_neighbour_classes(f32, classes) == nearest_neighbour_classes(bf16, classes)).sum()
        ),
    )
