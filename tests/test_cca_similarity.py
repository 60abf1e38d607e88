"""CCA of features vs word vectors and class-similarity matrices (SCARL's Fig. 1 and 2 analyses)."""

import numpy as np
import torch

from robustlab.analysis.cca import cca, pca_scores
from robustlab.analysis.similarity import class_similarity, offdiagonal_spearman, vector_similarity


def _views(n=400, seed=0):
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, 3))
    x = shared @ rng.normal(size=(3, 30)) + 1.5 * rng.normal(size=(n, 30))
    y = shared @ rng.normal(size=(3, 8)) + 1.0 * rng.normal(size=(n, 8))
    return x, y


def test_cca_agrees_with_scikit_learn_on_the_same_reduced_data():
    from sklearn.cross_decomposition import CCA

    x, y = _views()
    xr, yr = pca_scores(x, 6), pca_scores(y, 4)
    ours = cca(xr, yr, dim=None)
    sk = CCA(n_components=3, scale=False, max_iter=20000, tol=1e-12).fit(xr, yr)
    xs, ys = sk.transform(xr, yr)
    theirs = [abs(np.corrcoef(xs[:, i], ys[:, i])[0, 1]) for i in range(3)]
    np.testing.assert_allclose(ours.correlations[:3], theirs, atol=2e-3)
    # our variates realise the correlations
    np.testing.assert_allclose([np.corrcoef(ours.x_variates[:, i], ours.y_variates[:, i])[0, 1] for i in range(3)],
                               ours.correlations[:3], atol=1e-8)
    # `dim` reduces both views inside
    np.testing.assert_allclose(cca(x, y, dim=4).correlations, cca(pca_scores(x, 4), pca_scores(y, 4), dim=None).correlations)


def test_cca_is_one_on_linearly_related_views_and_reduction_avoids_the_trivial_one():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 5))
    y = x @ rng.normal(size=(5, 5)) + 3.0
    np.testing.assert_allclose(cca(x, y, dim=None).correlations, 1.0, atol=1e-8)
    # 500 pairs of 512-d noise vs word vectors of random labels: ≈ 1 unreduced, small after PCA
    feats, labels = rng.normal(size=(500, 512)), rng.integers(0, 10, 500)
    words = rng.normal(size=(10, 50))[labels]
    assert cca(feats, words, dim=None).correlations[0] > 0.99
    assert cca(feats, words, dim=5).correlations[0] < 0.3
    ridge = [cca(feats, words, dim=None, reg=r).correlations[0] for r in (0.1, 1.0)]  # the ridge alternative shrinks it
    assert ridge[1] < ridge[0] < 0.99



def test_canonical_correlations_do_not_depend_on_the_scale_of_the_features():
    """Views built so that the sample canonical correlations are exactly 0.9 and 0.5 (orthonormal centred
    columns), the second pair carried by a direction of x with 1e-3 of the first one's standard deviation,
    then mixed by random invertible maps and scaled by 1e-4 or 1e4."""
    rng = np.random.default_rng(3)
    n = 600
    z = rng.normal(size=(n, 4))
    e = np.linalg.qr(z - z.mean(0))[0]  # orthonormal columns with zero mean
    x = np.stack([e[:, 0], 1e-3 * e[:, 1]], 1) @ rng.normal(size=(2, 2))
    y = np.stack([0.9 * e[:, 0] + np.sqrt(1 - 0.81) * e[:, 2], 0.5 * e[:, 1] + np.sqrt(0.75) * e[:, 3]], 1) @ rng.normal(size=(2, 2))
    for scale in (1.0, 1e-4, 1e4):
        np.testing.assert_allclose(cca(scale * x, scale * y, dim=None).correlations, [0.9, 0.5], atol=1e-6)
        np.testing.assert_allclose(cca(scale * x, y, dim=None).correlations, [0.9, 0.5], atol=1e-6)


def test_similarity_matches_words_when_class_means_are_the_word_vectors():
    rng = np.random.default_rng(2)
    words = torch.tensor(rng.normal(size=(6, 10)), dtype=torch.float32)
    y = torch.arange(6).repeat(20)
    z = 2.0 * words[y] + 0.01 * torch.tensor(rng.normal(size=(120, 10)), dtype=torch.float32)
    s_model, s_words = class_similarity(z, y, 6).numpy(), vector_similarity(words).numpy()
    np.testing.assert_allclose(np.diag(s_model), 1.0, atol=1e-5)
    np.testing.assert_allclose(s_model, s_words, atol=1e-2)
    assert offdiagonal_spearman(s_model, s_words) > 0.99
    shuffled = class_similarity(z, y[torch.randperm(120, generator=torch.Generator().manual_seed(0))], 6).numpy()
    assert offdiagonal_spearman(shuffled, s_words) < 0.9
    missing = class_similarity(z[y != 3], y[y != 3], 6).numpy()
    assert np.isnan(missing[3]).all() and np.isfinite(offdiagonal_spearman(missing, s_words))
