"""Trainer: the loss goes down, resume == uninterrupted, NaN stops training with the last good
checkpoint on disk, the size schedules, the lr schedules (the same lr for every size schedule;
no plateau cut from a size change), devices, evaluation views; the train command.
The experiment and the demo are tested in tests/test_experiments.py."""

import os

import numpy as np
import pytest

from tinyspp.apps.cli import main
from tinyspp.backend import gpu_available
from tinyspp.data import make_synthetic
from tinyspp.nn import no_spp_net, small_spp_net
from tinyspp.train import Trainer, evaluate, extract_features, step_lr

TINY = dict(widths=(4, 8, 8), hidden=16)


@pytest.fixture(scope="module")
def tiny_data():
    train = make_synthetic(8, classes=("disk", "square", "cross"), size_range=(16, 22), seed=0)
    val = make_synthetic(3, classes=("disk", "square", "cross"), size_range=(16, 22), seed=1)
    return train, val


def _trainer(data, out_dir=None, **kw):
    train, val = data
    net = small_spp_net(3, levels=(2, 1), seed=0, **TINY)
    opts = dict(sizes=(16, 12), schedule="multi", batch_size=8, lr=0.05, seed=0,
                progress=False, out_dir=out_dir, patience=1)
    opts.update(kw)
    return Trainer(net, train, val, **opts)


def _params(net):
    return {k: np.array(v) for k, v in net.params().items()}


def test_training_drives_the_loss_down():
    # 8 plain-background images at the training size, no dropout or jitter: the net must fit
    # them, taking the loss from about 1.8 (initial logits are large) to well below ln 2
    data = make_synthetic(4, classes=("disk", "cross"), size_range=(16, 16),
                          background_contrast=0.0, seed=0)
    net = small_spp_net(2, levels=(2, 1), seed=0, widths=(8, 8, 8), hidden=32, dropout=0.0)
    trainer = Trainer(net, data, sizes=(16,), batch_size=8, lr=0.01, seed=0, jitter=0.0,
                      progress=False)
    losses = [h["train_loss"] for h in trainer.fit(30)]
    assert np.mean(losses[-3:]) < 0.25 < 0.2 * losses[0], losses
    assert {"epoch", "size", "lr", "train_loss", "train_error"} <= set(trainer.history[0])
    assert trainer.evaluate(data, view="full", size=16)["error"] <= 0.125


@pytest.mark.parametrize("lr_kw", [dict(lr_schedule="step", lr_steps=(2,)),
                                   dict(lr_schedule="plateau", patience=1)])
def test_resume_equals_uninterrupted(tiny_data, tmp_path, lr_kw):
    full = _trainer(tiny_data, out_dir=str(tmp_path / "full"), **lr_kw)
    full.fit(3)
    part = _trainer(tiny_data, out_dir=str(tmp_path / "part"), **lr_kw)
    part.fit(2)
    resumed = _trainer(tiny_data, out_dir=str(tmp_path / "part"), **lr_kw)  # a fresh process
    resumed.fit(3, resume=True)
    a, b = _params(full.net), _params(resumed.net)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    timeless = lambda hist: [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")}
                             for h in hist]
    assert timeless(resumed.history) == timeless(full.history)
    assert resumed.optimizer.lr == full.optimizer.lr
    assert os.path.exists(tmp_path / "part" / "history.json")
    other = _trainer(tiny_data, out_dir=str(tmp_path / "part"), sizes=(16, 14), **lr_kw)
    with pytest.raises(ValueError, match="resuming would not continue the same run"):
        other.fit(3, resume=True)
    if lr_kw["lr_schedule"] == "step":  # another lr schedule is another run too
        moved = _trainer(tiny_data, out_dir=str(tmp_path / "part"), lr_steps=(1,))
        with pytest.raises(ValueError, match="resuming would not continue the same run"):
            moved.fit(3, resume=True)


def test_nan_loss_raises_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    trainer = _trainer(tiny_data, out_dir=str(tmp_path))
    trainer.fit(1)
    good = _params(trainer.net)
    name = next(iter(trainer.net.params()))
    trainer.net.params()[name][...] = np.nan  # poison the weights in place
    with pytest.raises(FloatingPointError, match=r"loss became nan at epoch 2, batch 1"):
        trainer.fit(2)
    with np.load(tmp_path / "checkpoint.npz") as f:
        for k, v in good.items():
            np.testing.assert_array_equal(f[f"net/{k}"], v, err_msg=k)
    fresh = _trainer(tiny_data, out_dir=str(tmp_path)).load_checkpoint()
    assert fresh.epoch == 1 and all(np.isfinite(v).all() for v in _params(fresh.net).values())


def test_size_schedules(tiny_data):
    multi = _trainer(tiny_data, sizes=(16, 12), schedule="multi")
    assert [multi.size_for_epoch(e) for e in range(4)] == [16, 12, 16, 12]
    seen = []
    forward = multi.net.forward
    multi.net.forward = lambda x: (seen.append(x.shape[-2:]), forward(x))[1]
    multi.fit(2)
    assert {tuple(s) for s in seen} == {(16, 16), (12, 12)}  # train batches + val at 16
    assert [h["size"] for h in multi.history] == [16, 12]
    rand = _trainer(tiny_data, sizes=(12, 16), schedule="random")
    sizes = [rand.size_for_epoch(e) for e in range(20)]
    assert set(sizes) <= set(range(12, 17)) and len(set(sizes)) > 2
    assert sizes == [_trainer(tiny_data, sizes=(12, 16), schedule="random").size_for_epoch(e)
                     for e in range(20)]
    single = _trainer(tiny_data, sizes=(14,), schedule="single")
    assert {single.size_for_epoch(e) for e in range(5)} == {14}


def test_step_schedule_gives_every_size_schedule_the_same_lr(tiny_data):
    lrs = {}
    for schedule, sizes in (("single", (16,)), ("multi", (16, 12)), ("random", (12, 16))):
        t = _trainer(tiny_data, sizes=sizes, schedule=schedule, lr_steps=(2, 3), lr=0.05)
        lrs[schedule] = [h["lr"] for h in t.fit(4)]
    expected = [0.05, 0.05, pytest.approx(0.005), pytest.approx(0.0005)]
    assert lrs["single"] == lrs["multi"] == lrs["random"]
    assert lrs["single"] == expected
    assert step_lr(0.05, 3, (2, 3)) == lrs["multi"][3]


def _scripted(trainer, val_errors):
    """Replace the trainer's epoch by one that reports the given validation errors."""
    def fake_epoch():
        e = trainer.epoch
        return {"epoch": e + 1, "size": trainer.size_for_epoch(e), "lr": trainer.optimizer.lr,
                "val_error": val_errors[e]}
    trainer.train_epoch = fake_epoch
    return trainer


def test_plateau_never_cuts_the_lr_because_of_a_size_change(tiny_data):
    # a multi-size net scores worse at the 16-px validation after a 12-px epoch; both sizes
    # keep improving. A rule comparing across sizes would cut at epoch 2 (0.30 > 0.20);
    # like for like, nothing has plateaued, so the lr must stay
    improving = [0.20, 0.30, 0.18, 0.28, 0.16, 0.26, 0.14, 0.24]
    t = _scripted(_trainer(tiny_data, schedule="multi", sizes=(16, 12), lr_schedule="plateau",
                           patience=1, lr=0.05), improving)
    assert [h["lr"] for h in t.fit(8)] == [0.05] * 8
    # a real plateau at one size is still detected: the 12-px epochs stop improving
    stalls = [0.20, 0.30, 0.18, 0.30, 0.16, 0.31, 0.14, 0.24]
    t = _scripted(_trainer(tiny_data, schedule="multi", sizes=(16, 12), lr_schedule="plateau",
                           patience=1, lr=0.05), stalls)
    lrs = [h["lr"] for h in t.fit(8)]
    assert lrs[:4] == [0.05] * 4 and lrs[4] == pytest.approx(0.005), lrs
    assert lrs[6] == pytest.approx(0.0005), lrs


def test_trainer_rejects_bad_arguments(tiny_data):
    with pytest.raises(ValueError, match="Trainer: lr_schedule must be one of"):
        _trainer(tiny_data, lr_schedule="cosine")
    with pytest.raises(ValueError, match="lr_steps apply to lr_schedule='step'"):
        _trainer(tiny_data, lr_schedule="plateau", lr_steps=(3,))
    with pytest.raises(ValueError, match=r"Trainer: lr_drop must be in \(0, 1\]"):
        _trainer(tiny_data, lr_drop=1.5)
    with pytest.raises(TypeError, match="Trainer: lr_steps must be an integer"):
        _trainer(tiny_data, lr_steps=(2.5,))
    with pytest.raises(ValueError, match="Trainer: schedule must be one of"):
        _trainer(tiny_data, schedule="cyclic")
    with pytest.raises(ValueError, match=r"Trainer: schedule='random' needs sizes=\(lo, hi\)"):
        _trainer(tiny_data, sizes=(16,), schedule="random")
    with pytest.raises(ValueError, match="Trainer: lr must be > 0"):
        _trainer(tiny_data, lr=0.0)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _trainer(tiny_data).load_checkpoint("/nonexistent/checkpoint.npz")


@pytest.mark.skipif(gpu_available(), reason="a GPU is present: the GPU run is tested instead")
def test_gpu_device_without_gpu_is_a_clear_error(tiny_data):
    with pytest.raises(RuntimeError, match="Trainer: device='gpu' was requested but"):
        _trainer(tiny_data, device="gpu")


@pytest.mark.gpu
def test_training_on_gpu_matches_cpu(tiny_data):
    if not gpu_available():
        pytest.skip("needs CuPy and a CUDA device (none here); run `make test-gpu`")
    cpu = _trainer(tiny_data, jitter=0.0)
    gpu = _trainer(tiny_data, jitter=0.0, device="gpu")
    cpu.fit(2)
    gpu.fit(2)
    for h_cpu, h_gpu in zip(cpu.history, gpu.history):
        assert abs(h_cpu["train_loss"] - h_gpu["train_loss"]) < 1e-3
    assert gpu.evaluate(tiny_data[1], view="full")["n"] == len(tiny_data[1])


def test_evaluation_views(tiny_data):
    train, val = tiny_data
    net = small_spp_net(3, levels=(2, 1), seed=0, **TINY)
    for view in ("center", "multiview", "full", "warp"):
        res = evaluate(net, val, view=view, size=16)
        assert 0.0 <= res["error"] <= 1.0 and res["n"] == len(val) and res["loss"] > 0
    assert net.training  # evaluation restores training mode
    feats = extract_features(net[:9], val, view="full", size=16)
    assert feats.shape == (len(val), 8 * 5)  # 8 channels x (4 + 1) bins
    base = no_spp_net(3, input_size=16, seed=0, **TINY)
    assert evaluate(base, val, view="warp", size=16)["n"] == len(val)
    with pytest.raises(ValueError, match="accepts only 16x16 inputs"):
        evaluate(base, val, view="full", size=16)


def test_cli_train_quick(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--quick", "--epochs", "1", "--out", str(out), "--no-progress",
                 "--data", "digits", "--sizes", "20", "16"]) == 0
    assert "test error" in capsys.readouterr().out
    assert (out / "checkpoint.npz").exists() and (out / "test_errors.json").exists()


def test_training_bench_smoke():
    from types import SimpleNamespace

    from tinyspp.bench import training
    from tinyspp.ops import dispatch

    with dispatch.using_threads(2):
        rows = training.run(SimpleNamespace(repeats=1, quick=True, gpu=False, torch=None))
    rows, (handoff,) = rows[:4], rows[4:]  # the thread hand-off last (see test_bench_report)
    assert handoff.workload.startswith("thread hand-off") and handoff.unit == "us"
    assert [r.workload.split()[-1] for r in rows] == ["32x3x32x32", "32x3x48x48"] * 2
    steps, faults = rows[:2], rows[2:]
    assert all(r.ours_ms > 0 and r.torch_ms is None and "img/s" in r.note for r in steps)
    assert all(r.workload.startswith("page faults per SGD step") and r.unit == "faults"
               and r.ours_ms >= 0 and r.ratio is None for r in faults)
