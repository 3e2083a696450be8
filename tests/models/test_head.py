"""Features-mode head: input standardisation stays bounded when the fit set is tiny."""

from __future__ import annotations

import torch

from kibble.models.head import FeatureClassifier


def test_nearly_constant_feature_does_not_blow_up_on_new_images():
    fit = torch.tensor([[0.0, 1.0], [0.0, 3.0], [1e-7, 2.0]])  # feature 0 barely varies over the fit set
    head = FeatureClassifier(2, 2)
    head.set_feature_stats(fit)
    new = torch.tensor([[0.5, 2.0]])  # feature 0 varies on new images as much as the others do
    z = (new - head.feature_mean) / head.feature_std
    assert torch.isfinite(z).all() and z.abs().max() < 20  # with a 1e-6 floor it would be ~5e5
    assert torch.allclose(head.feature_std[1], fit[:, 1].std())  # features that vary keep their own spread


def test_single_row_fit_set_gives_finite_statistics():
    head = FeatureClassifier(3, 2)
    head.set_feature_stats(torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.equal(head.feature_std, torch.ones(3))
    assert torch.isfinite(head(torch.randn(4, 3))).all()
