import math

import pytest
import torch

from facegan.losses import make_loss


def bce(p, target):
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_bce_with_label_smoothing_matches_hand_computation():
    loss = make_loss("bce", real_label=0.9)
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    expected_d = ((bce(sigmoid(2.0), 0.9) + bce(sigmoid(-1.0), 0.9)) / 2
                  + (bce(sigmoid(0.5), 0) + bce(sigmoid(-3.0), 0)) / 2)
    assert loss.d_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    # The generator's target is 1 whatever the smoothing: smoothing is one-sided.
    expected_g = (bce(sigmoid(0.5), 1) + bce(sigmoid(-3.0), 1)) / 2
    assert loss.g_loss(fake).item() == pytest.approx(expected_g, rel=1e-6)
    assert loss.score(torch.tensor([0.0])).item() == pytest.approx(0.5)


def test_bce_without_smoothing_is_minimal_for_confident_correct_d():
    loss = make_loss("bce", real_label=1.0)
    assert loss.d_loss(torch.tensor([20.0]), torch.tensor([-20.0])).item() < 1e-6


def test_lsgan_matches_hand_computation():
    loss = make_loss("lsgan", real_label=1.0)
    real, fake = torch.tensor([0.5, 1.5]), torch.tensor([0.2, -0.4])
    expected_d = 0.5 * ((0.5 - 1) ** 2 + (1.5 - 1) ** 2) / 2 + 0.5 * (0.2 ** 2 + 0.4 ** 2) / 2
    assert loss.d_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert loss.g_loss(fake).item() == pytest.approx(0.5 * ((0.2 - 1) ** 2 + (-0.4 - 1) ** 2) / 2, rel=1e-6)


def test_hinge_matches_hand_computation():
    loss = make_loss("hinge")
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-2.0, 0.3])
    assert loss.d_loss(real, fake).item() == pytest.approx((0.5 + 0.0) / 2 + (0.0 + 1.3) / 2)
    assert loss.g_loss(fake).item() == pytest.approx(-(-2.0 + 0.3) / 2)
