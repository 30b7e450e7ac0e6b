"""The PCA's pure parts against plain numpy: moments, the fit, the choice of k, projection."""

from __future__ import annotations

import numpy as np
import pytest

from fruitflow.cli import JobError
from fruitflow.pca import Moments, choose_k, fit_pca, project


def correlated_rows(n: int, d: int, rank: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))
    return 5.0 + latent * rng.uniform(0.5, 3.0, size=d) + 0.01 * rng.normal(size=(n, d))


def test_merged_moments_equal_those_of_all_rows():
    rows = correlated_rows(97, 12, 4)
    merged = Moments.of(rows[:10]).merge(Moments.of(rows[10:11])).merge(Moments.of(rows[11:]))
    whole = Moments.of(rows)
    assert merged.count == 97
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.scatter, whole.scatter, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(merged.scatter / 96, np.cov(rows, rowvar=False), rtol=1e-9, atol=1e-9)


def test_merging_an_empty_side_changes_nothing():
    part = Moments.of(correlated_rows(5, 3, 2))
    empty = Moments(0, np.zeros(3), np.zeros((3, 3)))
    assert part.merge(empty) is part
    assert empty.merge(part) is part


def test_fit_matches_numpy_pca_of_standardised_rows():
    rows = correlated_rows(200, 20, 5)
    fit = fit_pca(Moments.of(rows), 0.95)

    standardised = (rows - rows.mean(axis=0)) / rows.std(axis=0, ddof=1)
    eigenvalues = np.linalg.eigvalsh(np.cov(standardised, rowvar=False))[::-1]
    expected_ratio = eigenvalues / eigenvalues.sum()
    np.testing.assert_allclose(fit.explained_ratio, expected_ratio, atol=1e-10)
    assert fit.k == int(np.searchsorted(np.cumsum(expected_ratio), 0.95) + 1)

    projected = project(fit, rows)
    assert projected.shape == (200, fit.k)
    assert projected.dtype == np.float32
    # Component scores are uncorrelated and carry the eigenvalues as their variances.
    np.testing.assert_allclose(np.var(projected, axis=0, ddof=1), eigenvalues[: fit.k], rtol=1e-4)
    covariance = np.cov(projected, rowvar=False)
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 1e-3 * eigenvalues[0]


def test_component_signs_are_reproducible():
    rows = correlated_rows(50, 8, 3)
    first = fit_pca(Moments.of(rows), 0.9)
    again = fit_pca(Moments.of(rows[::-1]), 0.9)
    np.testing.assert_allclose(first.components, again.components, atol=1e-8)


@pytest.mark.parametrize(
    ("ratios", "variance", "k"),
    [
        ([0.5, 0.3, 0.15, 0.05], 0.5, 1),
        ([0.5, 0.3, 0.15, 0.05], 0.8, 2),
        ([0.5, 0.3, 0.15, 0.05], 0.81, 3),
        ([0.5, 0.3, 0.15, 0.05], 0.95, 3),
        ([0.5, 0.3, 0.15, 0.05], 1.0, 4),
        ([1.0], 0.95, 1),
    ],
)
def test_choose_k_is_the_smallest_count_reaching_the_share(ratios, variance, k):
    assert choose_k(np.array(ratios), variance) == k


def test_choose_k_reaches_one_despite_rounding():
    ratios = np.full(3, 1 / 3)  # sums to 0.9999999999999999
    assert choose_k(ratios, 1.0) == 3


def test_fewer_images_than_dimensions_keep_at_most_n_minus_1_components():
    rows = correlated_rows(6, 40, 10)
    fit = fit_pca(Moments.of(rows), 1.0)
    assert len(fit.explained_ratio) == 5
    assert fit.k == 5
    assert project(fit, rows).shape == (6, 5)


def test_two_images_give_one_component():
    fit = fit_pca(Moments.of(correlated_rows(2, 10, 2)), 0.95)
    assert fit.k == 1
    assert fit.explained_ratio[0] == pytest.approx(1.0)


def test_one_image_is_refused():
    with pytest.raises(JobError, match="at least 2 images, found 1"):
        fit_pca(Moments.of(correlated_rows(1, 10, 1)), 0.95)


def test_constant_columns_are_kept_out_of_the_variance():
    rows = correlated_rows(30, 6, 3)
    rows[:, 2] = 4.2
    fit = fit_pca(Moments.of(rows), 1.0)
    assert np.isfinite(fit.components).all()
    assert np.abs(fit.components[2]).max() < 1e-9
    assert fit.explained_ratio.sum() == pytest.approx(1.0)


def test_all_constant_features_are_refused():
    with pytest.raises(JobError, match="every feature is constant"):
        fit_pca(Moments.of(np.ones((5, 4))), 0.95)


def test_tiny_feature_scales_do_not_matter():
    """Randomly initialised MobileNetV2 gives features of order 1e-11; standardising absorbs it."""
    rows = correlated_rows(40, 10, 3)
    small = fit_pca(Moments.of(rows * 1e-11), 0.95)
    plain = fit_pca(Moments.of(rows), 0.95)
    assert small.k == plain.k
    np.testing.assert_allclose(project(small, rows * 1e-11), project(plain, rows), rtol=1e-3, atol=1e-3)
