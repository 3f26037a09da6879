"""The multi-seed classification experiment (quick mode), its claims and report; the demo report
beside the multi-seed results; the claims renderer."""

import json

import numpy as np
import pytest

from tinyspp.apps import publish
from tinyspp.apps.cli import main
from tinyspp.apps.experiments import CONFIGS, lr_steps_for
from tinyspp.apps.reporting import claims_table, classify_details, paired_comparison, unbits
from tinyspp.stats import VERDICTS, mcnemar

CLAIM_KEYS = {"id", "claim", "paper", "tinyspp", "statistic", "verdict"}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """One quick experiment (2 seeds, 2 epochs, tiny data and nets), shared by the tests."""
    out = tmp_path_factory.mktemp("classify")
    assert main(["experiment", "classify", "--quick", "--seeds", "3", "5", "--epochs", "2",
                 "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    return out, json.loads((out / "classify.json").read_text())


def test_results_file_records_how_it_was_made(quick_results):
    out, res = quick_results
    assert res["command"].startswith("python -m tinyspp experiment classify")
    assert res["seeds"] == [3, 5] and res["threads"] == 1 and res["quick"] is True
    assert {"python", "numpy", "scikit-learn"} <= set(res["versions"])
    assert res["seconds"] > 0 and res["started"].endswith("+00:00")
    assert res["settings"]["epochs"] == 2 and res["settings"]["lr_schedule"] == "step"
    report = (out / "classify.md").read_text()
    assert "Quick mode" in report and "| claim | paper |" in report
    for png in ("classify_synthetic_curves.png", "classify_synthetic_error_vs_size.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in report


def test_every_arm_gets_the_same_schedule_and_the_same_test_images(quick_results):
    _, res = quick_results
    ds = res["datasets"]["synthetic"]
    n = ds["setup"]["n_test"]
    assert [s["seed"] for s in ds["seeds"]] == [3, 5]
    for s in ds["seeds"]:
        assert list(s["arms"]) == [label for label, _, _ in CONFIGS]
        lrs = {label: [h["lr"] for h in a["history"]] for label, a in s["arms"].items()}
        assert len({tuple(v) for v in lrs.values()}) == 1, lrs  # no arm's lr differs
        sizes = [h["size"] for h in s["arms"]["SPP, multi-size"]["history"]]
        assert sizes == [32, 26]
        for a in s["arms"].values():
            assert all(len(bits) == n for bits in a["correct"].values())
            for view, bits in a["correct"].items():
                assert a["error"][view] == pytest.approx(1 - unbits(bits).mean())
    assert len(ds["test_labels"]) == n


def test_lr_steps_fall_on_even_epochs_inside_the_budget():
    for epochs in (2, 10, 30, 40, 41, 60):
        steps = lr_steps_for(epochs)
        assert all(s % 2 == 0 and 0 < s < epochs for s in steps), (epochs, steps)
    assert lr_steps_for(40) == (28, 36)


def test_claims_follow_the_schema_and_recompute_from_the_bits(quick_results):
    _, res = quick_results
    claims = res["claims"]
    assert [c["id"] for c in claims] == ["spp_trunk", "multi_vs_single", "two_vs_random",
                                         "full_vs_crop", "svm_full_vs_warp", "pool5_dim"]
    for c in claims:
        assert CLAIM_KEYS <= set(c) and all(isinstance(c[k], str) for k in CLAIM_KEYS)
        assert c["verdict"] in VERDICTS
    ds = res["datasets"]["synthetic"]
    stack = lambda label, view: np.stack([unbits(s["arms"][label]["correct"][view])
                                          for s in ds["seeds"]])
    a, b = stack("SPP, multi-size", "multiview"), stack("SPP, single-size", "multiview")
    mc = mcnemar(a.ravel(), b.ravel())
    num = claims[1]["numbers"]
    assert (num["b"], num["c"], num["p_mcnemar"]) == (mc.b, mc.c, mc.p_value)
    assert f"only A right {mc.b}, only B right {mc.c}" in claims[1]["statistic"]
    assert claims[-1]["verdict"] == "reproduced"  # one pooled length at every test size


def test_paired_comparison_by_hand():
    a = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)   # errors 1/4 and 2/4
    b = np.array([[0, 1, 1, 0], [0, 0, 0, 0]], bool)   # errors 2/4 and 4/4
    cmp = paired_comparison(a, b, n_boot=200)
    assert (cmp["b"], cmp["c"]) == (3, 0)
    assert cmp["diff"] == pytest.approx((0.25 + 0.5) / 2 - (0.5 + 1.0) / 2)
    assert cmp["seeds_a_better"] == 2 and cmp["low"] <= cmp["diff"] <= cmp["high"]
    with pytest.raises(ValueError, match="paired_comparison: shapes differ"):
        paired_comparison(a, b[:, :3])


def test_claims_renderer_concatenates_results_files(quick_results, tmp_path):
    out, res = quick_results
    assert "No results files yet" in claims_table(tmp_path)
    (tmp_path / "classify.json").write_text((out / "classify.json").read_text())
    text = claims_table(tmp_path)
    assert text.count("\n| ") == len(res["claims"]) and "results/classify.json" in text
    detect = {"command": "python -m tinyspp detect --experiment", "seeds": [0],
              "claims": [{"id": "map", "claim": "mAP comparable to R-CNN", "paper": "59.2 vs 58.5",
                          "tinyspp": "x", "statistic": "y", "verdict": "partly"}]}
    (tmp_path / "detect.json").write_text(json.dumps(detect))
    both = claims_table(tmp_path)
    assert both.index("mAP comparable to R-CNN") > both.index(res["claims"][-1]["claim"])
    assert "results/detect.json" in both
    assert "10 views" in classify_details(tmp_path)
    assert publish.RENDERERS["claims.table"] == "tinyspp.apps.reporting:claims_table"


def test_bad_seeds_are_refused(tmp_path):
    from tinyspp.apps.experiments import run_classify

    with pytest.raises(ValueError, match="run_classify: seeds must be distinct"):
        run_classify(quick=True, seeds=(1, 1), out=str(tmp_path))


def test_demo_quick_reports_beside_the_multi_seed_verdicts(quick_results, tmp_path, capsys):
    results_dir, res = quick_results
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress",
                 "--results", str(results_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"report written to {out}" in printed
    report = (out / "report.md").read_text()
    for heading in ("## Data", "## Training", "## Evaluation", "## SVM on features",
                    "## This run beside the multi-seed experiment", "## SPP-net detection"):
        assert heading in report
    for c in res["claims"]:
        assert f"- {c['claim']}: **{c['verdict']}**" in report
        assert c["claim"] in printed
    assert "mean ± sd over 2 seeds" in report
    for png in ("samples.png", "learning_curves.png", "error_vs_size.png",
                "detect/detections.png"):
        assert (out / png).stat().st_size > 1000
        assert f"]({png})" in report


def test_demo_without_results_says_which_command_makes_them(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-detect", "--out", str(out), "--no-progress",
                 "--results", str(tmp_path / "none"), "--epochs", "1"]) == 0
    assert "run `python -m tinyspp experiment classify`" in (out / "report.md").read_text()


def test_notebook_03_quotes_the_results_file():
    """The committed notebook 03 shows the claims of results/classify.json, as they are now."""
    root = publish.ROOT
    res = publish.load_results("classify")
    nb = json.loads((root / "notebooks" / "03_multi_size_training.ipynb").read_text())
    shown = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            shown.append("".join(out.get("text", "")))
            shown.append("".join(out.get("data", {}).get("text/markdown", "")))
    text = "\n".join(shown)
    assert f"command: {res['command']}" in text
    for c in res["claims"]:
        assert f"| {c['tinyspp']} | {c['statistic']} | **{c['verdict']}** |" in text, c["id"]
