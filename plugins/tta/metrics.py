"""Measures of generated audio that do not trust the generator: computed on the independent
judge's embeddings (judge.py), never on the generator's own features."""

from __future__ import annotations

import numpy as np


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to embeddings ``a`` [n, d] and ``b`` [m, d]:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), as FAD/FID compute it."""
    from scipy.linalg import sqrtm

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(root):  # numerical noise on a (near-)singular product
        root = root.real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


def principal_projection(reference: np.ndarray, dims: int):
    """A function projecting embeddings onto the top ``dims`` principal axes of ``reference``:
    with a few dozen clips, a Frechet distance in the full 128-d embedding rests on singular
    covariances, so it is measured in a space the clip counts can estimate."""
    reference = np.asarray(reference, np.float64)
    mean = reference.mean(axis=0)
    _, _, axes = np.linalg.svd(reference - mean, full_matrices=False)
    top = axes[:dims].T
    return lambda x: (np.asarray(x, np.float64) - mean) @ top


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> float:
    """1 - cosine similarity, averaged over every pair of rows: 0 when all rows point the same way."""
    x = np.asarray(embeddings, np.float64)
    if len(x) < 2:
        raise ValueError("diversity needs at least two embeddings")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    similarity = x @ x.T
    upper = np.triu_indices(len(x), k=1)
    return float(np.mean(1.0 - similarity[upper]))
