"""Exact uncentered PCA from a Gram matrix (PAPER_MAP §5.0, §5.1, paper §3.1 Eqs. 3–4, W2).

For a row matrix X (n × D) with Gram K = XXᵀ: eigh(K) = U Λ Uᵀ gives the singular values
σ_k = √λ_k and left singular vectors U of X; the right singular vectors (principal directions)
are v_k = Xᵀu_k / σ_k. Explained fractions use the *total* denominator Σ_j σ_j² = trace K over all
min(n, D) values (the reference's top-10 denominator is available as a legacy switch, W2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backbone_lab.analysis.gram import DriftGram, row_normalise_gram


@dataclass
class PCAResult:
    """Spectrum of an uncentered PCA.

    Attributes:
        sigma: (n,) singular values of X, descending (parameter units; unitless if row-normalised).
        U: (n, n) left singular vectors (columns), U[:, k] ↔ sigma[k].
        explained: (n,) σ_k² / denominator.
        cumulative: (n,) cumulative explained fraction.
        denominator: Σσ² used (trace K, or Σ of the top 10 in legacy mode).
        k95, k99: smallest k with cumulative ≥ 0.95 / 0.99.
        top10_denominator: whether the legacy denominator was used.
    """

    sigma: np.ndarray
    U: np.ndarray
    explained: np.ndarray
    cumulative: np.ndarray
    denominator: float
    k95: int
    k99: int
    top10_denominator: bool = False

    @property
    def pc1(self) -> float:
        return float(self.explained[0])

    def summary(self, n_values: int = 10) -> dict:
        return {
            "pc1_pct": 100.0 * float(self.explained[0]),
            "pc2_pct": 100.0 * float(self.explained[1]) if len(self.explained) > 1 else None,
            "k95": self.k95,
            "k99": self.k99,
            "n_rows": int(len(self.sigma)),
            "denominator": float(self.denominator),
            "top10_denominator": self.top10_denominator,
            "singular_values": [float(s) for s in self.sigma[:n_values]],
            "explained": [float(e) for e in self.explained[:n_values]],
        }


def effective_rank(explained: np.ndarray, threshold: float) -> int:
    """Smallest k with Σ_{j≤k} explained_j ≥ threshold (tolerant to 1e-12 rounding)."""
    cum = np.cumsum(explained)
    k = int(np.searchsorted(cum, threshold - 1e-12) + 1)
    return min(k, len(explained))


def uncentered_pca(K: np.ndarray, top10_denominator: bool = False) -> PCAResult:
    """Uncentered PCA of the rows whose Gram is ``K`` (n × n, float64).

    Args:
        K: Gram matrix of the rows (raw or row-normalised).
        top10_denominator: legacy reference mode, explained fractions over the top 10 σ² only
            (PAPER_MAP W2; inflates PC1, e.g. 71.43 % instead of 69.26 %).
    """
    K = np.asarray(K, dtype=np.float64)
    K = 0.5 * (K + K.T)
    lam, U = np.linalg.eigh(K)
    order = np.argsort(lam)[::-1]
    lam = np.clip(lam[order], 0.0, None)
    U = U[:, order]
    sigma = np.sqrt(lam)
    if top10_denominator:
        denom = float(np.sum(lam[:10]))
    else:
        denom = float(np.trace(K))
    explained = lam / denom if denom > 0 else np.zeros_like(lam)
    return PCAResult(
        sigma=sigma,
        U=U,
        explained=explained,
        cumulative=np.cumsum(explained),
        denominator=denom,
        k95=effective_rank(explained, 0.95),
        k99=effective_rank(explained, 0.99),
        top10_denominator=top10_denominator,
    )


def pca_from_singular_values(sigma: np.ndarray, n_rows: int | None = None, row_normalised: bool = False, top10_denominator: bool = False) -> dict:
    """Explained fractions from (possibly truncated) singular values.

    With ``row_normalised`` the total denominator is exact without the full spectrum: Σσ² = number
    of (non-zero) rows. Otherwise the values given are assumed to be the whole spectrum.
    """
    s2 = np.asarray(sigma, dtype=np.float64) ** 2
    if top10_denominator:
        denom = float(s2[:10].sum())
    elif row_normalised:
        if n_rows is None:
            raise ValueError("row-normalised explained fractions need n_rows (the denominator)")
        denom = float(n_rows)
    else:
        denom = float(s2.sum())
    ex = s2 / denom
    return {"explained": ex, "pc1_pct": 100 * float(ex[0]), "denominator": denom}


@dataclass
class RowPCA:
    """PCA of a set of drift rows expressed in a DriftGram's coefficient basis.

    Attributes:
        pca: the spectrum.
        rows: (n, T) coefficient rows actually decomposed (row-normalised if requested).
        row_norms: (n,) ‖row‖ before normalisation.
        dirs: (T, k) coefficients of the principal directions, v_k = Xᵀ dirs[:, k] (unit norm);
            columns with σ_k ≤ rtol·σ_1 are zero.
        row_normalised: whether rows were normalised.
    """

    pca: PCAResult
    rows: np.ndarray
    row_norms: np.ndarray
    dirs: np.ndarray
    row_normalised: bool

    @property
    def v1(self) -> np.ndarray:
        return self.dirs[:, 0]

    def scores(self) -> np.ndarray:
        """(n, k) projections of the decomposed rows on the directions = U Σ."""
        return self.pca.U * self.pca.sigma[None, :]


def pca_rows(
    gram: DriftGram | np.ndarray,
    C: np.ndarray,
    row_normalise: bool = True,
    top10_denominator: bool = False,
    floor: float = 1e-12,
    n_dirs: int | None = None,
    rtol: float = 1e-10,
) -> RowPCA:
    """Uncentered PCA of rows r_i = Xᵀ C[i] (C: (n, T) coefficient rows over the Gram's rows).

    K = C G Cᵀ, optionally row-normalised; directions come back as coefficients
    dirs[:, k] = C_nᵀ u_k / σ_k.
    """
    G = gram.G if isinstance(gram, DriftGram) else np.asarray(gram)
    C = np.asarray(C, dtype=np.float64)
    K = C @ G @ C.T
    if row_normalise:
        Kn, norms = row_normalise_gram(K, floor)
        Cn = C / np.maximum(norms, floor)[:, None]
    else:
        Kn, norms, Cn = K, np.sqrt(np.clip(np.diag(K), 0, None)), C
    res = uncentered_pca(Kn, top10_denominator=top10_denominator)
    k = len(res.sigma) if n_dirs is None else min(n_dirs, len(res.sigma))
    good = res.sigma[:k] > rtol * max(res.sigma[0], 1e-300)
    dirs = np.zeros((C.shape[1], k))
    if good.any():
        dirs[:, good] = Cn.T @ res.U[:, :k][:, good] / res.sigma[:k][good]
    return RowPCA(pca=res, rows=Cn, row_norms=norms, dirs=dirs, row_normalised=row_normalise)
