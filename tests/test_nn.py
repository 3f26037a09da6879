"""Layers, Sequential, SGD and checkpoints."""

import os

import numpy as np
import pytest
from strategies import tie_free

from tinyspp.backend import asnumpy
from tinyspp.gradcheck import directional_check, numerical_grad, rel_error
from tinyspp.nn import (
    SGD,
    Conv2d,
    Dropout,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    SpatialPyramidPooling,
    checkpoint,
)
from tinyspp.ops import softmax_cross_entropy


def small_net(levels=(3, 2, 1), pool="max", mode="adaptive", dtype=np.float64, p=0.0):
    rng = np.random.default_rng(0)
    return Sequential(
        Conv2d(2, 3, 3, pad=1, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2, stride=2),
        Conv2d(3, 4, 3, stride=1, pad=1, rng=rng, dtype=dtype), ReLU(),
        SpatialPyramidPooling(levels=levels, mode=mode, pool=pool),
        Linear(4 * sum(n * n for n in levels), 6, rng=rng, dtype=dtype), ReLU(), Dropout(p, rng=1),
        Linear(6, 3, rng=rng, dtype=dtype),
    )


def loss_of(net, x, labels):
    return softmax_cross_entropy(net.forward(x), labels)


# --------------------------------------------------------------------------- gradient checks

@pytest.mark.parametrize("mode", ["adaptive", "paper", "caffe"])
@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("size", [(9, 7), (12, 12)])
def test_whole_spp_net_gradients_match_directional_differences(mode, pool, size):
    """Directional derivative of the loss along random directions, for x and every parameter."""
    net = small_net(pool=pool, mode=mode)
    x = tie_free((2, 2) + size, 3, scale=4.0)
    labels = np.array([0, 2])
    loss, dlogits = loss_of(net, x, labels)
    dx = net.backward(dlogits)
    numeric, analytic = directional_check(lambda v: loss_of(net, v, labels)[0], x, dx, rng=0)
    assert abs(numeric - analytic) <= 1e-6 * max(abs(analytic), 1e-3), (numeric, analytic)
    grads = {k: g.copy() for k, g in net.grads().items()}
    for name, w in net.params().items():
        def f(v, w=w):
            saved = w.copy()
            w[...] = v
            try:
                return loss_of(net, x, labels)[0]
            finally:
                w[...] = saved
        numeric, analytic = directional_check(f, w.copy(), grads[name], rng=1)
        assert abs(numeric - analytic) <= 1e-6 * max(abs(analytic), 1e-3), (name, numeric,
                                                                              analytic)


def test_small_net_input_gradient_elementwise():
    net = Sequential(Conv2d(1, 2, 3, stride=2, pad=1, rng=0, dtype=np.float64), ReLU(),
                     MaxPool2d(2), Flatten(), Linear(2 * 2 * 2, 3, rng=1, dtype=np.float64))
    x = tie_free((2, 1, 7, 8), 4, scale=3.0)
    labels = np.array([1, 2])
    _, dlogits = loss_of(net, x, labels)
    dx = net.backward(dlogits)
    numeric = numerical_grad(lambda v: loss_of(net, v, labels)[0], x, 1e-6)
    assert rel_error(numeric, dx, floor=1e-3 * np.abs(dx).max()) < 1e-6


# ------------------------------------------------------------------------------ SPP property

def test_spp_net_gives_same_length_for_three_input_sizes():
    net = small_net(levels=(4, 2, 1), dtype=np.float32).eval()
    spp_end = [i for i, layer in enumerate(net) if isinstance(layer, SpatialPyramidPooling)][0]
    trunk_and_spp = net[:spp_end + 1]
    rng = np.random.default_rng(0)
    for H, W in [(8, 8), (13, 21), (32, 17)]:
        x = rng.standard_normal((3, 2, H, W)).astype(np.float32)
        assert trunk_and_spp(x).shape == (3, 4 * 21)
        assert net(x).shape == (3, 3)


# ------------------------------------------------------------------------------ container API

def test_params_grads_keys_slicing_and_modes():
    net = small_net(p=0.5)
    keys = ["0.w", "0.b", "3.w", "3.b", "6.w", "6.b", "9.w", "9.b"]
    assert list(net.params()) == keys
    assert net.grads() == {}
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8))
    net.eval()  # the same dropout mask (none) at both calls
    net.backward(np.ones_like(net(x)))
    assert list(net.grads()) == keys
    g0 = net.grads()["0.w"].copy()
    net.backward(np.ones_like(net(x)))
    np.testing.assert_allclose(net.grads()["0.w"], g0)  # overwritten, not accumulated
    # slices share the layer objects and so the parameters
    trunk = net[:5]
    assert isinstance(trunk, Sequential) and len(trunk) == 5 and trunk[0] is net[0]
    trunk.params()["0.w"][...] = 0.0
    assert not net.params()["0.w"].any()
    assert [type(layer).__name__ for layer in net][:3] == ["Conv2d", "ReLU", "MaxPool2d"]
    # train / eval reach every layer, and dropout follows them
    assert net.eval() is net and not any(layer.training for layer in net)
    net.params()["0.w"][...] = 1.0
    out1, out2 = net(x), net(x)
    np.testing.assert_array_equal(out1, out2)  # eval: dropout is the identity
    assert net.train() is net and all(layer.training for layer in net)
    assert not np.array_equal(net(x), net(x))  # train: a fresh mask each call


def test_layer_geometry_attributes_and_default_seed():
    conv = Conv2d(3, 8, 5, stride=2, pad=2)
    assert (conv.ksize, conv.stride, conv.pad, conv.in_channels, conv.out_channels) == (
        5, 2, 2, 3, 8)
    pool = MaxPool2d(3, stride=2)
    assert (pool.ksize, pool.stride, pool.pad) == (3, 2, 0)
    assert MaxPool2d(2).stride == 2
    fc = Linear(10, 4)
    assert (fc.in_features, fc.out_features) == (10, 4)
    assert fc.params["w"].shape == (10, 4) and fc.params["w"].dtype == np.float32
    np.testing.assert_array_equal(Conv2d(3, 8, 5).params["w"], conv.params["w"])  # rng=None: 0
    assert not np.array_equal(Conv2d(3, 8, 5, rng=1).params["w"], conv.params["w"])
    # He initialisation: std sqrt(2 / fan_in)
    big = Conv2d(64, 64, 3, rng=0).params["w"]
    assert abs(big.std() - np.sqrt(2 / (64 * 9))) < 0.01 * np.sqrt(2 / (64 * 9))
    assert not Conv2d(3, 8, 5).params["b"].any()


def test_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match="Conv2d.backward: call forward first"):
        Conv2d(1, 1, 1).backward(np.ones((1, 1, 1, 1)))


def test_to_cpu_keeps_arrays_and_gpu_raises_without_device():
    net = small_net()
    assert net.to("cpu") is net
    assert isinstance(net.params()["0.w"], np.ndarray)
    from tinyspp.backend import gpu_available
    if not gpu_available():
        with pytest.raises(RuntimeError, match="gpu"):
            net.to("gpu")


def test_net_on_xp_float32(xp):
    net = small_net(dtype=np.float32).to("gpu" if xp is not np else "cpu")
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 2, 10, 9)), dtype=np.float32)
    loss, dlogits = softmax_cross_entropy(net(x), xp.asarray([0, 1]))
    dx = net.backward(dlogits)
    assert dx.dtype == np.float32 and all(g.dtype == np.float32 for g in net.grads().values())
    ref = small_net(dtype=np.float64)
    ref_loss, _ = softmax_cross_entropy(ref(asnumpy(x).astype(np.float64)), np.array([0, 1]))
    assert abs(loss - ref_loss) / abs(ref_loss) < 1e-5


# ----------------------------------------------------------------------------------------- SGD

def test_sgd_momentum_and_weight_decay_against_hand_computed_values():
    net = Sequential(Linear(2, 1, rng=0, dtype=np.float64))
    w, b = net.params()["0.w"], net.params()["0.b"]
    w[...] = [[1.0], [-2.0]]
    b[...] = [0.5]
    layer = net[0]
    opt = SGD(net, lr=0.1, momentum=0.9, weight_decay=0.01)
    # step 1: g = [[0.2], [0.4]], v = -0.1 * (g + 0.01 w) = [[-0.021], [-0.038]]
    layer.grads = {"w": np.array([[0.2], [0.4]]), "b": np.array([1.0])}
    opt.step()
    np.testing.assert_allclose(w, [[0.979], [-2.038]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(b, [0.5 - 0.1 * (1.0 + 0.005)], rtol=0, atol=1e-15)
    # step 2: v = 0.9 v - 0.1 (g + 0.01 w), with the new w
    layer.grads = {"w": np.array([[0.0], [0.0]]), "b": np.array([0.0])}
    v_w = 0.9 * np.array([[-0.021], [-0.038]]) - 0.1 * 0.01 * np.array([[0.979], [-2.038]])
    opt.step()
    np.testing.assert_allclose(w, np.array([[0.979], [-2.038]]) + v_w, rtol=0, atol=1e-15)
    assert opt.steps == 2
    opt.lr /= 10
    assert opt.lr == pytest.approx(0.01)


def test_sgd_state_dict_resumes_exactly(tmp_path):
    def run(steps, net, opt, rng):
        for _ in range(steps):
            x = rng.standard_normal((4, 2, 8, 8))
            _, dlogits = loss_of(net, x, np.array([0, 1, 2, 0]))
            net.backward(dlogits)
            opt.step()

    net_a = small_net()
    opt_a = SGD(net_a, lr=0.05, momentum=0.9, weight_decay=1e-3)
    run(3, net_a, opt_a, np.random.default_rng(1))
    path = tmp_path / "ck.npz"
    net_a.save(path, extra={"epoch": 3, **{f"opt/{k}": v for k, v in opt_a.state_dict().items()}})
    run(2, net_a, opt_a, np.random.default_rng(2))

    net_b = small_net()
    opt_b = SGD(net_b, lr=1.0)
    _, extra = net_b.load(path, with_extra=True)
    assert extra["epoch"] == 3
    opt_b.load_state_dict({k[4:]: v for k, v in extra.items() if k.startswith("opt/")})
    assert (opt_b.lr, opt_b.momentum, opt_b.weight_decay, opt_b.steps) == (0.05, 0.9, 1e-3, 3)
    run(2, net_b, opt_b, np.random.default_rng(2))
    for k, v in net_a.params().items():
        np.testing.assert_array_equal(net_b.params()[k], v)


# --------------------------------------------------------------------------------- checkpoints

def test_save_load_round_trip(tmp_path):
    net = small_net(dtype=np.float32)
    path = tmp_path / "net.npz"
    net.save(path)
    other = small_net(dtype=np.float32)
    for v in other.params().values():
        v[...] = 0
    assert other.load(path) is other
    for k, v in net.params().items():
        np.testing.assert_array_equal(other.params()[k], v)
        assert other.params()[k].dtype == np.float32
    state = net.state_dict()
    state["0.w"][...] = 7  # a copy: the network is unchanged
    assert not (net.params()["0.w"] == 7).any()
    assert sorted(os.listdir(tmp_path)) == ["net.npz"]  # no temp file left behind


def test_failed_write_leaves_old_checkpoint_intact(tmp_path, monkeypatch):
    net = small_net()
    path = tmp_path / "net.npz"
    net.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    for v in net.params().values():
        v[...] = 1.0
    for module, name in [(checkpoint.np, "savez"), (checkpoint.os, "replace")]:
        with monkeypatch.context() as m:
            m.setattr(module, name, crash)  # fail while writing, then at the rename
            with pytest.raises(OSError, match="simulated"):
                net.save(path)
        assert path.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == ["net.npz"]  # the temp file was removed
    net.save(path)
    assert path.read_bytes() != before


def test_mismatched_checkpoint_names_the_key_and_path(tmp_path):
    path = tmp_path / "net.npz"
    small_net(levels=(3, 2, 1)).save(path)
    with pytest.raises(ValueError, match=r"'6\.w'.*net\.npz"):
        small_net(levels=(4, 2, 1)).load(path)  # fc6 input width differs
    net = small_net()
    before = {k: v.copy() for k, v in net.params().items()}
    shorter = Sequential(*list(net)[:5])
    shorter.save(path)
    with pytest.raises(ValueError, match=r"missing keys \['6\.w', '6\.b', '9\.w', '9\.b'\]"):
        net.load(path)
    for k, v in net.params().items():  # nothing was changed by the failed load
        np.testing.assert_array_equal(v, before[k])


def test_missing_and_corrupt_files_raise_clear_errors(tmp_path):
    net = small_net()
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        net.load(tmp_path / "nothere.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="bad.npz.*not a readable"):
        net.load(bad)
    truncated = tmp_path / "trunc.npz"
    net.save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="trunc.npz"):
        net.load(truncated)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.ones(2))
    with pytest.raises(ValueError, match="not a tinyspp checkpoint"):
        net.load(plain)


def test_docs_layers_example_runs(tmp_path, monkeypatch):
    """The usage example of docs/layers.md's "Networks" section (the old README's "Layers and
    networks"), executed as written."""
    page = open(os.path.join(os.path.dirname(__file__), "..", "docs", "layers.md")).read()
    section = page.split("## Networks (`tinyspp.nn`)", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "docs/layers.md", "exec"), namespace)
    assert namespace["extra"]["epoch"] == 1 and (tmp_path / "net.npz").exists()
    assert np.isfinite(namespace["loss"])


def test_backward_without_input_grad_gives_the_same_parameter_gradients():
    rng = np.random.default_rng(3)
    net = Sequential(Conv2d(2, 3, 3, pad=1, rng=rng), ReLU(), SpatialPyramidPooling((2, 1)),
                     Linear(3 * 5, 4, rng=rng)).astype(np.float64)
    x = tie_free((2, 2, 6, 5), seed=4)
    labels = np.array([1, 3])
    _, dlogits = softmax_cross_entropy(net(x), labels)
    dx = net.backward(dlogits)
    full = {k: v.copy() for k, v in net.grads().items()}
    _, dlogits = softmax_cross_entropy(net(x), labels)
    assert net.backward(dlogits, input_grad=False) is None
    assert dx.shape == x.shape
    for k, g in net.grads().items():
        np.testing.assert_array_equal(g, full[k], err_msg=k)


class _Spy(Layer):
    """Identity layer that records the keyword arguments of each backward call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        return x

    def backward(self, dout):
        self.calls.append(dout.shape)
        return dout


def test_backward_without_input_grad_stops_at_the_first_layer_with_parameters(monkeypatch):
    """Issue 12: the unused input gradient was skipped only when layer 0 was a Conv2d; the
    no-SPP baseline starts with FixedInputSize. Now any parameter-free prefix is skipped and
    the first parametrised layer is asked for its parameter gradients only."""
    from tinyspp.nn import no_spp_net

    net = no_spp_net(3, input_size=16, widths=(2, 3, 4), hidden=5, seed=0).astype(np.float64)
    net.eval()  # the same (no) dropout mask in both passes
    x = tie_free((2, 3, 16, 16), seed=5)
    labels = np.array([0, 2])
    _, dlogits = softmax_cross_entropy(net(x), labels)
    net.backward(dlogits)
    full = {k: v.copy() for k, v in net.grads().items()}
    conv = net[1]
    seen = []
    original = type(conv).backward
    monkeypatch.setattr(conv, "backward",
                        lambda d, need_dx=True: seen.append(need_dx) or original(conv, d, need_dx))
    entry = net[0]
    monkeypatch.setattr(entry, "backward", lambda d: pytest.fail("FixedInputSize.backward ran"))
    _, dlogits = softmax_cross_entropy(net(x), labels)
    assert net.backward(dlogits, input_grad=False) is None
    assert seen == [False]
    for k, g in net.grads().items():
        np.testing.assert_allclose(g, full[k], rtol=1e-12, atol=1e-15, err_msg=k)

    # a parameter-free prefix of any kind (here a spy) is skipped; a first Linear gets
    # need_dx=False too, and a network without parameters backpropagates nothing
    spy = _Spy()
    lin = Linear(4, 2, rng=0).astype(np.float64)
    net2 = Sequential(spy, lin)
    out = net2(np.ones((3, 4)))
    assert net2.backward(np.ones_like(out), input_grad=False) is None and spy.calls == []
    assert set(lin.grads) == {"w", "b"}
    assert net2.backward(np.ones_like(out)).shape == (3, 4) and spy.calls == [(3, 4)]
    assert Sequential(_Spy()).backward(np.ones(2), input_grad=False) is None


# --- ReLU then max pooling, run as pooling then ReLU (Sequential's SWAP_RELU_POOL) ------------

def _relu_pool_values(kind, shape, seed, dtype):
    """Inputs on which the swap could go wrong if it were not exact: ties (integers, many of
    them zero or negative), windows with no positive value, -0.0, and NaN."""
    rng = np.random.default_rng(seed)
    if kind == "ties":
        x = rng.integers(-2, 3, shape).astype(dtype)
        x[..., ::3] = -0.0
        return x
    x = rng.standard_normal(shape).astype(dtype)
    if kind == "nan":
        x.flat[rng.integers(0, x.size, 3)] = np.nan
    if kind == "negative":
        x = -np.abs(x)
    return x


def _run_pair(net, x, dout, swap, monkeypatch):
    from tinyspp.nn import sequential

    monkeypatch.setattr(sequential, "SWAP_RELU_POOL", swap)
    out = net.forward(x)
    dx = net.backward(dout)
    return out, dx, {k: v.copy() for k, v in net.grads().items()}


@pytest.mark.parametrize("pool", [dict(ksize=2), dict(ksize=3, stride=2),
                                  dict(ksize=3, stride=2, pad=1), dict(ksize=2, ceil_mode=True)])
@pytest.mark.parametrize("kind", ["random", "ties", "negative", "nan"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_then_pool_runs_swapped_with_the_same_bits(monkeypatch, pool, kind, dtype):
    x = _relu_pool_values(kind, (3, 4, 9, 11), 3, dtype)
    rng = np.random.default_rng(4)
    # the pair alone (x straight into ReLU, MaxPool) and after a convolution
    for layers in ((ReLU(), MaxPool2d(**pool), Flatten()),
                   (Conv2d(4, 5, 3, pad=1, rng=0, dtype=dtype), ReLU(), MaxPool2d(**pool),
                    Flatten())):
        seq = Sequential(*layers)
        dout = rng.standard_normal(seq.forward(x).shape).astype(dtype)
        plain = _run_pair(seq, x, dout, False, monkeypatch)
        swapped = _run_pair(seq, x, dout, True, monkeypatch)
        assert seq._swapped == {len(layers) - 3}  # the last forward ran the pair swapped
        for a, b in zip(plain[:2], swapped[:2], strict=True):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        assert plain[2].keys() == swapped[2].keys()
        for k in plain[2]:
            assert plain[2][k].tobytes() == swapped[2][k].tobytes()


def test_swapped_pair_caches_and_the_training_step_path(monkeypatch):
    from tinyspp.nn import sequential

    net = small_net(dtype=np.float32)
    x = tie_free((2, 2, 8, 8), 5, np.float32)
    labels = np.array([0, 2])
    monkeypatch.setattr(sequential, "SWAP_RELU_POOL", True)
    out = net.forward(x)
    assert net._swapped == {1}  # ReLU 1 + MaxPool 2; ReLU 4 before the SPP layer is not a pool
    assert net[1]._cache.positive.shape == (2, 3, 4, 4)  # the pooled map's shape
    _, dlogits = softmax_cross_entropy(out, labels)
    assert net.backward(dlogits, input_grad=False) is None
    swapped = {k: v.copy() for k, v in net.grads().items()}
    monkeypatch.setattr(sequential, "SWAP_RELU_POOL", False)
    net.forward(x)
    assert net._swapped == set() and net[1]._cache.positive.shape == (2, 3, 8, 8)
    net.backward(dlogits, input_grad=False)
    for k, v in net.grads().items():
        np.testing.assert_array_equal(v, swapped[k])
    # a subclass of either layer runs as written (its forward may not commute)
    class MyReLU(ReLU):
        pass

    seq = Sequential(MyReLU(), MaxPool2d(2))
    monkeypatch.setattr(sequential, "SWAP_RELU_POOL", True)
    seq.forward(x)
    assert seq._swapped == set()
