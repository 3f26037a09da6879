"""The small SPP-net, its no-SPP twin, and the trunk/head split."""

import numpy as np
import pytest

from tinyspp.nn import no_spp_net, small_spp_net
from tinyspp.nn.models import split_trunk_head, trunk_layers_geometry, trunk_stride

TINY = dict(widths=(4, 6, 8), hidden=16)


@pytest.mark.parametrize("H, W", [(16, 16), (13, 29), (40, 20), (4, 4)])
def test_spp_net_accepts_any_size(H, W):
    net = small_spp_net(5, in_channels=1, **TINY)
    x = np.random.default_rng(0).random((2, 1, H, W), dtype=np.float32)
    out = net.forward(x)
    assert out.shape == (2, 5) and out.dtype == np.float32
    assert net.backward(np.ones_like(out)).shape == x.shape


def test_no_spp_net_needs_its_input_size():
    net = no_spp_net(5, input_size=24, **TINY)
    x = np.zeros((2, 3, 24, 24), np.float32)
    assert net.forward(x).shape == (2, 5)
    with pytest.raises(ValueError, match="accepts only 24x24 inputs, got 24x32"):
        net.forward(np.zeros((2, 3, 24, 32), np.float32))
    with pytest.raises(ValueError, match="smaller than bins"):
        no_spp_net(5, input_size=8, bins=4)


def test_same_seed_same_trunk_and_different_pooling():
    spp, base = small_spp_net(4, seed=3, **TINY), no_spp_net(4, input_size=16, seed=3, **TINY)
    spp_trunk, _ = split_trunk_head(spp)
    base_trunk, _ = split_trunk_head(base)
    a = spp_trunk.params()
    b = base_trunk.params()
    assert [v.shape for v in a.values()] == [v.shape for v in b.values()]
    for va, vb in zip(a.values(), b.values()):
        np.testing.assert_array_equal(va, vb)
    # SPP (4, 2, 1) -> 8 channels x 21 bins; the fixed pooling -> 8 channels x 4 x 4
    assert spp.params()["9.w"].shape == (8 * 21, 16)
    assert base.params()["11.w"].shape == (8 * 4 * 4, 16)


def test_split_trunk_head_composes_to_the_net():
    net = small_spp_net(3, seed=0, **TINY)
    net.eval()
    trunk, head = split_trunk_head(net)
    x = np.random.default_rng(1).random((2, 3, 20, 28), dtype=np.float32)
    feats = trunk.forward(x)
    assert feats.shape == (2, 8, 5, 7)  # total stride 4
    np.testing.assert_array_equal(head.forward(feats), net.forward(x))
    assert trunk_stride(trunk) == 4
    assert [g[1:] for g in trunk_layers_geometry(trunk)] == [
        (5, 1, 2), (2, 2, 0), (3, 1, 1), (2, 2, 0), (3, 1, 1)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="small_spp_net: num_classes must be >= 2"):
        small_spp_net(1)
    with pytest.raises(ValueError, match="small_spp_net: widths must be 3"):
        small_spp_net(3, widths=(4, 4))
    with pytest.raises(ValueError, match="levels must not be empty"):
        small_spp_net(3, levels=())
