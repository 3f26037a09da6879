# %% [markdown]
# # 03 · Multi-size training, a fair schedule, and claims measured over seeds
#
# **Assumes:** the forward and backward passes of each layer and the softmax cross-entropy of
# [notebook 00](00_layers_backprop.ipynb), and the SPP layer of
# [notebook 02](02_spp_layer.ipynb) (any $H \times W$ map becomes $C \cdot M$ numbers). A little
# statistics helps (a binomial test). **Previous:** [02 · The SPP layer](02_spp_layer.ipynb).
# **Next:** [04 · Region pooling and detection](04_region_pooling_detection.ipynb).
#
# **What you will learn**
#
# 1. One training step written out: forward, loss, backward, the SGD update with momentum and
#    weight decay, checked against the library by hand; then the *size switch* between epochs,
#    which only a network with SPP survives.
# 2. The learning-rate schedule as a formula, why it must be the same for every network, and
#    how a plateau rule that compares epochs of different sizes starves a multi-size network.
# 3. How a claim is measured: several seeds, the same test images, a paired test (McNemar),
#    an interval (paired bootstrap) and a verdict computed by code.
#
# **The paper, in our words.** Sec. 2.4: *single-size* training uses 224-pixel crops;
# *multi-size* training uses 224 and 180 pixels (the 180 image is the 224 crop resized, so only
# the resolution differs), one set of weights, switching size after every full epoch. Sec. 3.1.2
# and 3.1.3 (Table 2, 10-view testing) report that SPP improves each network over the same
# network without it, that multi-size training improves it further, and that a size drawn at
# random from [180, 224] does a little worse than the two fixed sizes; Sec. 3.1.4 (Table 3) that
# the full image beats the centre crop. Here the images are small synthetic shapes, the sizes are
# 32 and 26 pixels (26/32 is about 180/224) and the net is tiny.

# %%
import math
import tempfile
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from matplotlib.ticker import FuncFormatter, LogLocator

from tinyspp import viz
from tinyspp.apps.experiments import (
    CONFIGS, EPOCHS, LR, build_model, lr_steps_for, make_setup, run_classify, train_sizes,
)
from tinyspp.apps.publish import load_results
from tinyspp.apps.reporting import claims_markdown, error_rows, markdown_table, pm, unbits
from tinyspp.data import channel_stats, normalize, train_batch
from tinyspp.nn import SGD
from tinyspp.ops import softmax_cross_entropy
from tinyspp.stats import binom_two_sided, mcnemar, paired_bootstrap
from tinyspp.train import PlateauRule, Trainer, step_lr

QUICK = viz.quick_mode()
viz.setup()
SEED = 0
print("quick mode:", QUICK)

# %% [markdown]
# ## 1. The data
#
# `make_setup("synthetic")` draws filled shapes on photographic backgrounds; heights and widths
# vary independently, so sizes and aspect ratios vary. Six classes are *source* classes (trained
# on); four more are held out for the SVM test of section 5. The test images are the same for
# every seed.

# %%
setup = make_setup("synthetic", quick=QUICK, seed=SEED)
hs = [h for h, _ in setup.train.sizes()]
ws = [w for _, w in setup.train.sizes()]
print(f"train {len(setup.train)}, val {len(setup.val)}, test {len(setup.test)} images of "
      f"{setup.train.num_classes} classes; heights {min(hs)}-{max(hs)}, widths {min(ws)}-{max(ws)}"
      f" px; training sizes {setup.size} and {setup.small}")
fig, axes = plt.subplots(1, 6, figsize=(9.0, 1.9))
for ax, k in zip(axes, range(setup.train.num_classes)):
    img = setup.train.images[int(np.flatnonzero(setup.train.labels == k)[0])]
    ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
    ax.set_title(f"{setup.train.classes[k]} {img.shape[1]}x{img.shape[2]}", fontsize=8)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 2. One training step, written out
#
# A mini-batch of $B$ crops $x$ with labels $y$ goes forward to logits $z = f(x; \theta)$; the
# loss is the mean cross-entropy
#
# $$L = -\frac{1}{B}\sum_{i=1}^{B} \log \operatorname{softmax}(z_i)_{y_i}, \qquad
#   \frac{\partial L}{\partial z_i} = \frac{\operatorname{softmax}(z_i) - e_{y_i}}{B}.$$
#
# `net.backward` carries $\partial L / \partial z$ back through every layer (notebook 00) and
# leaves $g = \nabla_\theta L$ in `net.grads()`. SGD with momentum $\mu$ and weight decay
# $\lambda$ (the form Caffe and the paper use) then updates every parameter $w$ with its
# velocity $v$ (zero at the start):
#
# $$v \leftarrow \mu v - \eta\,(g + \lambda w), \qquad w \leftarrow w + v.$$
#
# Below: one step at 32 px, checked by hand against `SGD.step`.

# %%
rng = np.random.default_rng(SEED)
net = build_model("spp", setup, seed=SEED, quick=QUICK)
mean, std = channel_stats(setup.train.images)
MU, WD, B = 0.9, 5e-4, 32
opt = SGD(net, lr=LR, momentum=MU, weight_decay=WD)


def batch(size):
    """A random training batch at ``size`` px (crops cut at the largest size, then resized)."""
    idx = rng.choice(len(setup.train), B, replace=False)
    x = train_batch([setup.train.images[i] for i in idx], size, rng, base=setup.size)
    return normalize(x, mean, std), setup.train.labels[idx]


x, y = batch(setup.size)
logits = net.forward(x)
loss, dlogits = softmax_cross_entropy(logits, y)
p = np.exp(logits - logits.max(1, keepdims=True))
p /= p.sum(1, keepdims=True)
assert np.allclose(dlogits, (p - np.eye(logits.shape[1])[y]) / B, atol=1e-7)
net.backward(dlogits, input_grad=False)

w0 = {k: v.copy() for k, v in net.params().items()}
g0 = {k: v.copy() for k, v in net.grads().items()}
opt.step()
for k, w in net.params().items():
    v1 = -LR * (g0[k] + WD * w0[k])
    np.testing.assert_allclose(w, w0[k] + v1, rtol=1e-5, atol=1e-7, err_msg=k)
print(f"input {x.shape} -> logits {logits.shape}; loss {float(loss):.3f} "
      f"(chance: ln {logits.shape[1]} = {math.log(logits.shape[1]):.3f})")
print("SGD.step == the formula for every parameter; largest |update|:",
      f"{max(float(np.abs(w - w0[k]).max()) for k, w in net.params().items()):.2e}")

# %% [markdown]
# **The size switch.** The next epoch of a multi-size schedule feeds 26-px crops to the *same*
# weights. The trunk's map shrinks (total stride 4), but the pyramid still returns $C \cdot M$
# numbers, so the fc layer is unchanged. The second step also uses the velocity of the first:
# $v_2 = \mu v_1 - \eta (g_2 + \lambda w_1)$.

# %%
spp_at = next(i for i, layer in enumerate(net) if type(layer).__name__ == "SpatialPyramidPooling")
for size in (setup.size, setup.small):
    xs = np.zeros((2, 3, size, size), np.float32)
    conv3 = net[:spp_at].forward(xs)
    print(f"input {size}x{size}: conv3 map {conv3.shape[1:]}, SPP output "
          f"{net[:spp_at + 1].forward(xs).shape[1]} numbers")

x2, y2 = batch(setup.small)
w1 = {k: v.copy() for k, v in net.params().items()}
v1 = {k: w1[k] - w0[k] for k in w1}
loss2, d2 = softmax_cross_entropy(net.forward(x2), y2)
net.backward(d2, input_grad=False)
g1 = {k: v.copy() for k, v in net.grads().items()}
opt.step()
for k, w in net.params().items():
    np.testing.assert_allclose(w, w1[k] + MU * v1[k] - LR * (g1[k] + WD * w1[k]),
                               rtol=1e-4, atol=1e-7, err_msg=k)
print(f"step 2 at {setup.small} px: loss {float(loss2):.3f}; the momentum formula holds")

baseline = build_model("nospp", setup, seed=SEED, quick=QUICK)
try:
    baseline.forward(x2)
except ValueError as err:
    print("no-SPP baseline:", str(err).split(";")[0])
else:
    raise AssertionError("the fixed-size baseline must refuse a second size")

# %% [markdown]
# ## 3. The schedule and its math
#
# **A fixed budget with fixed steps.** Every network trains for the same $E$ epochs, and the
# learning rate of epoch $e$ (0-based) depends on $e$ alone:
#
# $$\eta_e = \eta_0 \cdot 10^{-k(e)}, \qquad k(e) = \#\{s \in S : s \le e\},$$
#
# with the steps $S$ after 70 % and 90 % of the budget, rounded to even epochs
# (`lr_steps_for`). So the single-, multi- and random-size nets get *the same* rate at every
# epoch, and at every rate the multi-size net has trained equally often at both sizes.

# %%
steps = lr_steps_for(EPOCHS)
print(f"E = {EPOCHS}, eta_0 = {LR}, steps S = {steps}")
schedules = {}
for label, model, schedule in CONFIGS:
    t = Trainer(build_model(model, setup, seed=SEED, quick=QUICK), setup.train, setup.val,
                sizes=train_sizes(setup, schedule), schedule=schedule, lr=LR, lr_steps=steps,
                progress=False)
    schedules[label] = ([t.lr_for_epoch(e) for e in range(EPOCHS)],
                        [t.size_for_epoch(e) for e in range(EPOCHS)])
lrs = {label: lr for label, (lr, _) in schedules.items()}
assert len({tuple(v) for v in lrs.values()}) == 1, "every arm must get the same lr"
assert lrs["SPP, multi-size"] == [step_lr(LR, e, steps) for e in range(EPOCHS)]
multi_sizes = schedules["SPP, multi-size"][1]
rows = []
for lo, hi in zip((0, *steps), (*steps, EPOCHS)):
    phase = multi_sizes[lo:hi]
    rows.append([f"{lo + 1}-{hi}", f"{step_lr(LR, lo, steps):g}", phase.count(setup.size),
                 phase.count(setup.small)])
    assert phase.count(setup.size) == phase.count(setup.small)
display(Markdown(markdown_table(["epochs", "lr (all arms)", f"multi-size epochs at {setup.size}",
                                 f"at {setup.small}"], rows)))

# %% [markdown]
# **Why not "divide the lr when the validation error stops improving"?** Such a rule gives each
# network a schedule of its own, driven by its own noisy validation curve, so the arms no longer
# share one. A multi-size net adds a trap: validation is always a centre crop at 32 px, so if an
# epoch at 26 px leaves the net scoring worse at 32 px, a rule that compares every epoch with
# the best so far reads each switch to 26 px as a setback. Whether that happens here is measured
# on the recorded validation errors of the full run (section 4 says how they were made): at the
# same learning rate, the error after 26-px epochs against the error after 32-px epochs.

# %%
res = load_results("classify")
ds = res["datasets"]["synthetic"]
first_step = res["settings"]["lr_steps"][0]
gaps = []
for s in ds["seeds"]:
    h = s["arms"]["SPP, multi-size"]["history"][:first_step]
    after = {z: np.mean([e["val_error"] for e in h[min(4, first_step - 2):] if e["size"] == z])
             for z in (setup.size, setup.small)}
    gaps.append(after[setup.small] - after[setup.size])
print(f"multi-size net, epochs {min(4, first_step - 2) + 1}-{first_step} (lr {res['settings']['lr']}): validation error "
      f"after a {setup.small}-px epoch minus after a {setup.size}-px epoch = "
      f"{pm(gaps)} points (mean ± sd over {len(gaps)} seeds)")
gap_mean, gap_sd = np.mean(gaps), np.std(gaps, ddof=1) if len(gaps) > 1 else float("inf")
print("-> in this run the small-size epochs leave the net "
      + ("worse" if gap_mean > 0 else "no worse") + " at 32 px on average"
      + ("; the difference is smaller than its spread over seeds" if abs(gap_mean) < gap_sd
         else ""))

# %% [markdown]
# Replaying two plateau rules (`tinyspp.train.PlateauRule`, patience 3) on those recorded
# numbers, epoch by epoch, counts how often each would have cut the rate *before* the fixed
# schedule's first step -- where, by construction of the run, nothing was cut -- and at which
# epoch the first cut would have come. If the first cuts differ from arm to arm, a plateau rule
# would have given the arms different schedules. (A replay, not a new run: after a real cut the
# later epochs would differ.)

# %%
rows, extra = [], {}
for label in ds["seeds"][0]["arms"]:
    cuts = {True: [], False: []}
    first = []
    for s in ds["seeds"]:
        h = s["arms"][label]["history"][:first_step]
        for fair in (True, False):
            rule = PlateauRule(3, like_for_like=fair)
            hits = [e["epoch"] for e in h if rule.update(e["size"], e["val_error"])]
            cuts[fair].append(len(hits))
            if not fair:
                first.append(str(hits[0]) if hits else "-")
    rows.append([label, pm(cuts[False], scale=1), pm(cuts[True], scale=1), ", ".join(first)])
    extra[label] = sum(cuts[False]) - sum(cuts[True])
display(Markdown(markdown_table(
    ["network", "cuts, compared with every epoch", "cuts, compared like for like",
     "first cut (every epoch), per seed"], rows)))
for label, n in extra.items():
    print(f"{label}: comparing across sizes adds {n} cut(s) over {len(ds['seeds'])} seeds")

# %% [markdown]
# **Does the fixed schedule starve any arm?** If a network were still far from converged when
# the budget ran out, its numbers would measure the budget, not the method. For every arm,
# mean over seeds: the training loss and validation error before the first step and at the
# end, and the lr sequence (identical by construction, asserted).

# %%
rows = []
for label in ds["seeds"][0]["arms"]:
    hists = [s["arms"][label]["history"] for s in ds["seeds"]]
    assert all([e["lr"] for e in h] == [e["lr"] for e in hists[0]] for h in hists)
    rows.append([label,
                 pm([h[first_step - 1]["train_loss"] for h in hists], scale=1, digits=3),
                 pm([h[-1]["train_loss"] for h in hists], scale=1, digits=3),
                 pm([h[first_step - 1]["val_error"] for h in hists]),
                 pm([np.mean([e["val_error"] for e in h[-4:]]) for h in hists])])
lr_seqs = {tuple(e["lr"] for e in s["arms"][label]["history"])
           for s in ds["seeds"] for label in s["arms"]}
assert len(lr_seqs) == 1
display(Markdown(markdown_table(
    ["network", f"train loss, epoch {first_step}", "train loss, last epoch",
     f"val error % , epoch {first_step}", "val error %, last 4 epochs"], rows)))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.4))
for label in ds["seeds"][0]["arms"]:
    hists = [s["arms"][label]["history"] for s in ds["seeds"]]
    ep = [e["epoch"] for e in hists[0]]
    loss_ = np.array([[e["train_loss"] for e in h] for h in hists])
    val = np.array([[max(100 * e["val_error"], 0.1) for e in h] for h in hists])
    line, = ax1.plot(ep, loss_.mean(0), label=label)
    ax2.plot(ep, val.mean(0), color=line.get_color(), label=label)
    ax2.fill_between(ep, val.min(0), val.max(0), color=line.get_color(), alpha=0.15, lw=0)
for ax in (ax1, ax2):
    for i, s in enumerate(res["settings"]["lr_steps"]):
        ax.axvline(s + 0.5, color="0.5", ls=":", lw=1, label="lr / 10" if i == 0 else None)
ax1.set(xlabel="epoch", ylabel="training loss (cross-entropy)",
        title="training loss, mean over seeds")
ax2.set(xlabel="epoch", ylabel="validation error (%, log scale)", yscale="log",
        title="validation error: mean, range over seeds")
ax2.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
ax2.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
ax1.legend()
fig.tight_layout()
viz.save_thumbnail(fig, "03_learning_curves")
plt.show()

# %% [markdown]
# ## 4. The experiment over seeds
#
# `python -m tinyspp experiment classify` trains the four networks of the paper's Table 2 --
# no SPP, SPP single-size, SPP multi-size, SPP random-size -- once per seed (a seed sets the
# initial weights, the batch order, crops, flips, jitter and dropout masks), tests each on the
# same test images with a centre crop, 10 views and the full image, and records for every test
# image whether each network got it right. Here it runs in its quick mode (tiny data and nets,
# two epochs: the mechanics only, the numbers mean nothing):

# %%
with tempfile.TemporaryDirectory() as tmp:
    quick = run_classify(quick=True, seeds=(0, 1), epochs=2, out=tmp, threads=1,
                         progress=False, log=lambda msg: None)
print(f"quick run: {len(quick['claims'])} claims from {len(quick['seeds'])} seeds in "
      f"{quick['seconds']:.0f} s; verdicts {[c['verdict'] for c in quick['claims']]}")

# %% [markdown]
# The full run's numbers are loaded from `results/classify.json`, written by the command it
# records (printed below); nothing here is typed by hand.

# %%
S, N = len(ds["seeds"]), ds["setup"]["n_test"]
print(f"command: {res['command']}\nseeds {res['seeds']}, {res['settings']['epochs']} epochs, "
      f"{N} test images; {res['seconds'] / 60:.0f} min wall, "
      f"{res.get('cpu_seconds', float('nan')) / 60:.0f} min CPU, {res['threads']} BLAS thread")
display(Markdown(markdown_table(["network", "centre crop", "10 views", "full image", "warped",
                                 "train CPU s / seed"], error_rows(ds))))

# %% [markdown]
# **A paired test, by hand.** Two networks tested on the same images disagree on a few of them:
# $b$ images only A gets right, $c$ only B. If A and B were equally good, each disagreement
# would be a fair coin, so $b \sim \text{Binomial}(b + c, \tfrac12)$ and the exact two-sided
# p-value is
#
# $$p = \min\Bigl(1,\; 2 \sum_{i=0}^{\min(b, c)} \binom{b+c}{i} 2^{-(b+c)}\Bigr).$$
#
# The images both get right (or both wrong) carry no information about which is better: that is
# why pairing gives a sharper test than comparing two error rates. Seeds are pooled by stacking
# their images. Here A = multi-size, B = single-size, 10 views:

# %%
def stack(label, view):
    return np.stack([unbits(s["arms"][label]["correct"][view]) for s in ds["seeds"]])


A, Bm = stack("SPP, multi-size", "multiview"), stack("SPP, single-size", "multiview")
b, c = int((A & ~Bm).sum()), int((~A & Bm).sum())
n = b + c
p_hand = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)
mc = mcnemar(A.ravel(), Bm.ravel())
claim = next(cl for cl in res["claims"] if cl["id"] == "multi_vs_single")
assert (mc.b, mc.c) == (b, c) and math.isclose(mc.p_value, p_hand, rel_tol=1e-12)
assert math.isclose(claim["numbers"]["p_mcnemar"], p_hand, rel_tol=1e-12)
print(f"both right {int((A & Bm).sum())}, both wrong {int((~A & ~Bm).sum())}, only A {b}, "
      f"only B {c}  ->  p = {p_hand:.3g} (binom_two_sided: {binom_two_sided(b, n):.3g})")
boot = paired_bootstrap(lambda i: (~A[:, i]).mean() - (~Bm[:, i]).mean(), N, n_boot=2000,
                        seed=0)
print(f"error difference A - B = {100 * boot.diff:+.2f} points, 95 % paired-bootstrap interval "
      f"[{100 * boot.low:+.2f}, {100 * boot.high:+.2f}]")

# %% [markdown]
# ## 5. The claims, paper against tinyspp
#
# Each row compares two arms on the same images with the test above. The verdict is computed by
# `tinyspp.stats.verdict`: *reproduced* when the difference has the paper's sign, McNemar's
# $p < 0.05$ and every seed agrees; *partly* when the sign is the paper's without that;
# *not reproduced at this scale* when the sign is the opposite. The SVM row uses the features
# of the held-out classes (paper Sec. 3.3).

# %%
display(Markdown(claims_markdown(res["claims"])))
for verdict_ in ("reproduced", "partly", "not reproduced at this scale"):
    names = [cl["claim"] for cl in res["claims"] if cl["verdict"] == verdict_]
    print(f"{verdict_}: {len(names)}")
    for name in names:
        print(f"   - {name}")

# %% [markdown]
# **Full image at other test sizes.** A network with SPP can be tested on the whole image at any
# scale; below, the full-image error against the test image's shorter side, mean over seeds
# with the range as error bars (the dotted lines are the training sizes).

# %%
sizes = ds["test_sizes"]
fig, ax = plt.subplots(figsize=(6.0, 3.6))
spp_arms = [label for label in ds["seeds"][0]["arms"]
            if f"full@{sizes[0]}" in ds["seeds"][0]["arms"][label]["error"]]
for k, label in enumerate(spp_arms):
    vals = np.array([[100 * s["arms"][label]["error"][f"full@{z}"] for z in sizes]
                     for s in ds["seeds"]])
    m = vals.mean(0)
    shift = 0.3 * (k - (len(spp_arms) - 1) / 2)  # side by side: the error bars stay apart
    ax.errorbar(np.array(sizes) + shift, m, yerr=[m - vals.min(0), vals.max(0) - m], marker="o", capsize=3,
                label=label)
for i, z in enumerate(train_sizes(setup, "multi")):
    ax.axvline(z, color="0.5", ls=":", lw=1, label="training sizes" if i == 0 else None)
ax.set(xlabel="shorter side of the test image (px)", ylabel="top-1 test error (%)",
       title=f"full-image test error, {S} seeds")
ax.legend()
fig.tight_layout()
viz.save_thumbnail(fig, "03_error_vs_size")
plt.show()

# %% [markdown]
# ## Summary
#
# * One SGD step is four lines of math: forward, cross-entropy, backward, and
#   $v \leftarrow \mu v - \eta (g + \lambda w)$, $w \leftarrow w + v$; the library's step equals
#   the formula. Switching the input size between steps needs nothing but the pyramid.
# * A comparison of training schedules is only as fair as its learning-rate schedule: here the
#   rate depends on the epoch alone, the same for every network, and the multi-size net trains
#   equally often at both sizes at every rate. A plateau rule would give every arm a schedule of
#   its own, and comparing epochs of different sizes can add cuts that like-for-like comparison
#   does not make (the replay above counts them, arm by arm, in this run).
# * Claims rest on several seeds, the same test images and a paired test; the table above
#   gives, for each of the paper's classification claims, the paper's number, tinyspp's
#   mean ± sd and the verdict its statistic earns at this scale. The printed list says which
#   reproduce here and which do not.
# * One run of `make demo` is one seed: its report prints its numbers beside these.

# %% [markdown]
# ## Exercises
#
# 1. **Paired vs unpaired.** For the multi- vs single-size comparison above, compute a
#    two-proportion z-test that ignores the pairing (pool each arm's errors over seeds and
#    images) and compare its p-value with McNemar's. Which images make the difference?
# 2. **The plateau rule, live.** Train the multi-size net of `make_setup("synthetic",
#    quick=True)` with `Trainer(..., lr_schedule="plateau", patience=1)` and with
#    `PlateauRule(1, like_for_like=False)` replayed on its history. At which epochs would each
#    cut, and what size had those epochs?
# 3. **Another claim from the stored bits.** From `results/classify.json`, test "multi-size
#    beats single-size on the full image at 48 px" (`correct["full@48"]`) with `mcnemar` and
#    `paired_bootstrap`, and apply `tinyspp.stats.verdict`.
# 4. **More seeds.** How many seeds would you need for a true difference of the size measured
#    above to reach $p < 0.05$ most of the time? Estimate it by resampling seeds' bit vectors,
#    then check with `python -m tinyspp experiment classify --seeds 0 1 2 3 4 5`.
