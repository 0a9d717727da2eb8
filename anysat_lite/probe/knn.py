"""k-nearest-neighbour classification on frozen features (cosine similarity, similarity-weighted votes).

A kNN reads the *geometry* of the features: which training items are close.  How close depends on how
the features are scaled before the distances are taken (:func:`normalise_features`):

* ``"standardise"`` (the probes' protocol): every dimension to zero mean and unit variance over the
  training items.  Directions that *several* dimensions share keep their weight, so a few dominant
  principal directions can decide every neighbour (:func:`variance_shares` measures that).
* ``"whiten"`` (PCA whitening, a diagnostic): every principal direction of the training items to unit
  variance, so each direction counts once, however little variance it has -- what a linear probe sees
  too, since it can rescale any direction.  Noise directions are amplified as much as useful ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .linear import standardisation, train_linear

__all__ = ["knn_predict", "normalise_features", "variance_shares", "feature_geometry", "NORMALISATIONS"]

NORMALISATIONS = ("standardise", "whiten")


@torch.no_grad()
def normalise_features(train_x: Tensor, test_x: Tensor, how: str = "standardise") -> tuple[Tensor, Tensor]:
    """``train_x [N, D]`` and ``test_x [M, D]`` scaled with statistics of ``train_x`` only.

    ``"standardise"``: ``z = (x - mean) / std`` per dimension -> ``[N, D]``, ``[M, D]``.
    ``"whiten"``: the standardised ``z`` of the training items factorised as ``U diag(s) V^T`` (``V [D, r]``,
    ``r = min(N, D)``), then ``z V / (s / sqrt(N))``: each principal direction divided by its standard
    deviation, so the whitened training items have identity covariance -> ``[N, r']``, ``[M, r']``, where
    directions without variance (below float64 rounding; e.g. the one that centring removes when ``N <= D``) are
    dropped.  Standardising first changes nothing in exact arithmetic and keeps features of very different units
    well conditioned; the whitening standardises in float64, so that a direction without variance is not left
    with float32 rounding, which whitening would scale up to unit variance.
    """
    if how not in NORMALISATIONS:
        raise ValueError(f"normalise={how!r}: expected one of {', '.join(NORMALISATIONS)}")
    dtype = torch.float32 if how == "standardise" else torch.float64
    mu, sd = standardisation(train_x, dtype)
    a, b = (train_x.to(dtype) - mu) / sd, (test_x.to(dtype) - mu) / sd
    if how == "standardise":
        return a, b
    _, s, vh = torch.linalg.svd(a, full_matrices=False)  # s [r], vh [r, D]
    keep = s > s[0] * max(a.shape) * torch.finfo(torch.float64).eps
    w = vh[keep].T / (s[keep] / a.shape[0] ** 0.5)  # [D, r']: project, then divide by each direction's std
    return (a @ w).float(), (b @ w).float()


@torch.no_grad()
def variance_shares(x: Tensor, standardise: bool = True) -> Tensor:
    """The share of the total variance along each principal direction of ``x [N, D]``, largest first ``[min(N, D)]``.

    ``lambda_i / sum_j lambda_j`` for the eigenvalues ``lambda`` of the covariance of ``x`` (of its standardised
    dimensions by default, as the kNN compares them).  Sums to 1; a share near 1 at the top means that one
    direction decides every distance.
    """
    z = normalise_features(x, x[:1])[0] if standardise else x.float() - x.float().mean(0, keepdim=True)
    var = torch.linalg.svdvals(z).pow(2)
    return var / var.sum().clamp_min(1e-12)


@torch.no_grad()
def knn_predict(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    num_classes: int,
    k: int = 10,
    temperature: float = 0.07,
    normalise: str = "standardise",
) -> Tensor:
    """Each test item votes with its ``k`` most cosine-similar training items, weight ``exp(sim / T)``.

    Features are first scaled with the training items' statistics (:func:`normalise_features`; the probes
    standardise, as the linear probe does, so that no dimension dominates the similarity by its unit alone:
    raw per-band statistics mix reflectances, 8-bit aerial values and radar power).  Returns predicted
    class ids ``[N_test]``.
    """
    a, b = normalise_features(train_x, test_x, normalise)
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    sim = b @ a.t()
    k = min(k, a.shape[0])
    top, idx = sim.topk(k, dim=1)
    votes = torch.zeros(b.shape[0], num_classes, device=b.device)
    votes.scatter_add_(1, train_y.to(idx.device)[idx].long(), (top / temperature).exp())
    return votes.argmax(1)


def feature_geometry(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    k: int = 10,
    l2: float = 1e-4,
    bands: tuple[tuple[int, int], ...] = ((1, 3), (4, 16)),
) -> dict[str, float]:
    """Why a kNN can trail a linear probe on the same tile features ``[N, D]`` (notebook 05, section 9).

    Returns (accuracies: overall accuracy on the test tiles, in %):

    * ``"top 3 share"``: % of the standardised training features' variance in their three principal directions;
    * ``"directions"``: how many directions matter, ``exp`` of the entropy of the variance shares;
    * ``"linear a-b"`` for each ``(a, b)`` of ``bands``: a linear probe (:func:`train_linear`, penalty ``l2``) on
      the standardised features projected on principal directions ``a`` to ``b`` (1-based, largest first);
    * ``"kNN"`` and ``"kNN whitened"``: :func:`knn_predict` (``k`` neighbours) on standardised and on
      PCA-whitened features.
    """

    def accuracy(pred: Tensor) -> float:
        return 100 * (pred == test_y).float().mean().item()

    shares = variance_shares(train_x)
    z_train, z_test = normalise_features(train_x, test_x)  # standardised, as the probes see them
    directions = torch.linalg.svd(z_train, full_matrices=False).Vh  # rows: principal directions, largest first
    out = {
        "top 3 share": 100 * shares[:3].sum().item(),
        "directions": torch.exp(-(shares * shares.clamp_min(1e-12).log()).sum()).item(),
    }
    for first, last in bands:
        u = directions[first - 1 : last]
        probe = train_linear(z_train @ u.T, train_y, num_classes, l2=l2)
        out[f"linear {first}-{last}"] = accuracy(probe(z_test @ u.T).argmax(1))
    out["kNN"] = accuracy(knn_predict(train_x, train_y, test_x, num_classes, k))
    out["kNN whitened"] = accuracy(knn_predict(train_x, train_y, test_x, num_classes, k, normalise="whiten"))
    return out
