"""``diffrecon bench``: task/method parsing, the paired statistics, and the whole report (--quick)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import assert_one_sentence_error, make_phantom
from scipy.stats import ttest_rel
from tiny_priors import save_tiny_prior

from diffrecon.bench import parse_methods, parse_settings, parse_steps
from diffrecon.bench.statistics import paired_comparisons, summarise
from diffrecon.errors import SettingsError
from diffrecon.io import load_volume, save_volume
from diffrecon.io.sidecar import sidecar_path
from diffrecon.io.volume import Volume


def test_settings_text_becomes_tasks_with_checked_values():
    tasks = parse_settings("4x, acceleration=8+mask=equispaced", "mri")
    assert [t.label for t in tasks] == ["4x", "acceleration=8+mask=equispaced"]
    assert tasks[1].settings(3).acceleration == 8.0 and tasks[1].settings(3).mask == "equispaced"
    assert tasks[1].settings(3).seed == 3
    ct = parse_settings(None, "ct")  # the grid: 30/60/120 views and 25 % dose
    assert [t.settings(0).views for t in ct] == [30, 60, 120, 180] and ct[3].settings(0).dose == 0.25
    assert parse_settings("sigma=0.2", "denoise")[0].settings(0).noise_sigma == 0.2
    for bad, words in [("speed=3", "unknown setting"), ("views=many", "must be a int"), ("4", "key=value"),
                       ("views=1", "at least 2 views"), ("4x,4x", "twice")]:
        with pytest.raises(SettingsError, match=words):
            parse_settings(bad, "ct" if "views" in bad else "mri")


def test_method_text_becomes_baselines_and_diffusion_variants():
    specs = parse_methods("tv, diffusion, diffusion:ddpm//50/hot, diffusion:ddim/dds/25/hot+noblend", "mri",
                          have_prior=True)
    assert [s.base for s in specs] == ["tv", "diffusion", "diffusion", "diffusion"]
    assert specs[2].overrides == {"sampler": "ddpm", "steps": 50, "hot_start": True}
    assert specs[3].overrides == {"sampler": "ddim", "guidance": "dds", "steps": 25, "hot_start": True,
                                  "blend_tv": False}
    assert [s.label for s in parse_methods(None, "ct", have_prior=True)] == ["fbp", "tv", "l1-wavelet", "diffusion"]
    assert "diffusion" not in [s.label for s in parse_methods(None, "denoise", have_prior=False)]
    for bad, words in [("fbp", "does not apply to mri"), ("diffusion:fast", "unknown sampler"),
                       ("diffusion:ddim/dds/0", "positive"),
                       ("diffusion:ddim/dds/25/cold", "'\\+' list"), ("tv:x", "no variant"), ("tv,tv", "twice")]:
        with pytest.raises(SettingsError, match=words):
            parse_methods(bad, "mri", have_prior=True)
    assert parse_steps("25,10,25") == [10, 25]
    with pytest.raises(SettingsError):
        parse_steps("0,10")


def test_paired_comparisons_match_scipy_and_bonferroni_over_all_of_them():
    rng = np.random.default_rng(0)
    rows = []
    for s in range(8):
        base = 25 + rng.normal()
        for method, shift in [("tv", 0.0), ("l1-wavelet", -0.5 + 0.1 * rng.normal()), ("diffusion", 2 + 0.3 * rng.normal())]:
            rows.append({"task": "4x", "data": "scan", "slice": s, "method": method, "psnr": base + shift,
                         "ssim": 0.7 + shift / 100, "nmse": 0.01, "mae": 0.02, "seconds": 1.0})
    summary = summarise(rows)
    assert summary["4x"]["tv"]["psnr"]["n"] == 8
    comps = paired_comparisons(rows, summary, ["tv", "l1-wavelet"], ["diffusion"])
    assert {c["reference"] for c in comps} == {"tv"}  # the best classical method by mean PSNR
    diff = next(c for c in comps if c["method"] == "diffusion" and c["metric"] == "psnr")
    a = np.array([r["psnr"] for r in rows if r["method"] == "diffusion"])
    b = np.array([r["psnr"] for r in rows if r["method"] == "tv"])
    assert diff["mean_difference"] == pytest.approx((a - b).mean())
    assert diff["p"] == pytest.approx(ttest_rel(a, b).pvalue)
    assert diff["comparisons"] == 4  # 2 methods x 2 metrics
    assert diff["p_bonferroni"] == pytest.approx(min(1.0, 4 * diff["p"]))


@pytest.fixture(scope="module")
def tiny_prior_file(tmp_path_factory, mri_prior):
    return save_tiny_prior(tmp_path_factory.mktemp("prior") / "tiny.safetensors", mri_prior)


@pytest.fixture
def mri_scan(tmp_path):
    path = tmp_path / "scan.npy"
    save_volume(Volume(make_phantom(3, 24, 24), modality="MR"), path)
    return path


def test_quick_bench_writes_every_part_of_the_report(cli, tmp_path, tiny_prior_file, mri_scan):
    out = tmp_path / "bench"
    args = ("bench", mri_scan, "--modality", "mri", "--settings", "4x,8x", "--methods",
            "zero-filled,tv,diffusion,diffusion:ddim/projection", "--model", tiny_prior_file,
            "--steps", "10,25,50", "--quick", "--out", out)
    result = cli(*args)
    assert result.code == 0, result.err
    results = json.loads((out / "results.json").read_text())
    # two middle slices x 2 tasks x 4 methods (MRI's input is the zero-filled column: not repeated)
    assert len(results["per_slice"]) == 2 * 2 * 4
    assert {r["method"] for r in results["per_slice"]} == {"zero-filled", "tv", "diffusion", "diffusion:ddim/projection"}
    for row in results["per_slice"]:
        assert all(math.isfinite(row[k]) for k in ("psnr", "ssim", "nmse", "mae", "seconds"))
    assert set(results["summary"]) == {"4x", "8x"}
    assert results["command"].startswith("diffrecon bench") and results["model"]["step"] == 30
    assert results["settings"]["tasks"][1]["acceleration"] == 8.0 and results["diffrecon_version"]
    comps = results["comparisons"]
    assert comps and all(c["reference"] in ("zero-filled", "tv") for c in comps)
    assert all(c["p_bonferroni"] >= c["p"] for c in comps if not math.isnan(c["p"]))
    # the options each diffusion method ran with, per task (quick: 3 steps)
    ran = results["diffusion_options"]["8x"]
    assert ran["diffusion:ddim/projection"]["guidance"] == "projection" and ran["diffusion"]["steps"] == 3
    # the ablation keeps several step counts even in quick mode
    assert len({r["steps"] for r in results["ablation_table"]}) >= 2
    md = (out / "results.md").read_text()
    assert "## 4x" in md and "## 8x" in md and "Bonferroni" in md and "## Steps ablation" in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["ablation_steps.png", "calibration_4x.png", "calibration_8x.png", "grid_4x_scan_001.png",
                    "grid_8x_scan_001.png"]
    # the calibration curve per task and diffusion method (issue 12): nominal against observed coverage
    curve = results["calibration"]["4x"]["diffusion"]
    assert len(curve["observed"]) == len(curve["nominal"]) and all(0 <= c <= 1 for c in curve["observed"])
    assert curve["observed"] == sorted(curve["observed"])  # wider intervals never cover less
    assert "Calibration curve (nominal → observed coverage)" in md and "| σ scale |" in md
    import matplotlib.image

    grid = matplotlib.image.imread(out / "grid_4x_scan_001.png")
    assert grid.shape[1] > 1.5 * grid.shape[0] and grid.std() > 0.05  # a wide grid of tiles, not blank
    case = out / "cases" / "4x_scan_001"
    names = sorted(p.name for p in case.glob("*.nii.gz"))
    assert names == sorted(["ground-truth.nii.gz", "zero-filled.nii.gz", "tv.nii.gz", "diffusion.nii.gz",
                            "diffusion-ddim-projection.nii.gz"])
    truth = load_volume(case / "ground-truth.nii.gz").data
    assert truth.shape == (1, 24, 24) and np.allclose(truth[0], make_phantom(3, 24, 24)[1], atol=1e-5)
    # where it ran (--device auto: the CPU on a machine without CUDA), in the results and every case file
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert results["environment"]["device"]["device"] == expected
    assert json.loads(sidecar_path(case / "tv.nii.gz").read_text())["device"]["device"] == expected

    # same seed: the same scores, slice by slice
    again = cli(*args[:-1], tmp_path / "again")
    assert again.code == 0, again.err
    rerun = json.loads((tmp_path / "again" / "results.json").read_text())["per_slice"]
    assert [(r["method"], r["psnr"]) for r in rerun] == [(r["method"], r["psnr"]) for r in results["per_slice"]]


def test_each_bench_task_runs_with_its_own_default_steps(mri_prior):
    """CT's noiseless views take more steps than its low-dose task (modalities.task_defaults):
    one bench over both tasks gives each its own, and an explicit step count holds for both."""
    from diffrecon.bench.runner import _diffusion_setups
    from diffrecon.modalities import CALIBRATED_STEPS, CT_SPARSE_VIEW_STEPS

    tasks = parse_settings("views=60,dose=0.25", "ct")
    methods = parse_methods("diffusion,diffusion:ddim/dds/10", "ct", have_prior=True)
    steps = {t.label: {label: setup.options.steps
                       for label, setup in _diffusion_setups(methods, mri_prior, t.settings(0), 0, 1, False).items()}
             for t in tasks}
    assert steps == {"views=60": {"diffusion": CT_SPARSE_VIEW_STEPS, "diffusion:ddim/dds/10": 10},
                     "dose=0.25": {"diffusion": CALIBRATED_STEPS, "diffusion:ddim/dds/10": 10}}


def test_ct_bench_scores_fbp_and_tv_on_the_same_sinogram(cli, tmp_path):
    hu = (make_phantom(2, 32, 32) * 1400 - 1000).astype(np.float32)
    scan = tmp_path / "ct.nii.gz"
    save_volume(Volume(hu, modality="CT", units="HU"), scan)
    out = tmp_path / "ct"
    result = cli("bench", scan, "--modality", "ct", "--settings", "views=12,dose=0.25+views=24", "--methods", "fbp,tv",
                 "--quick", "--out", out)
    assert result.code == 0, result.err
    results = json.loads((out / "results.json").read_text())
    methods = {r["method"] for r in results["per_slice"]}
    assert methods == {"input", "fbp", "tv"}  # CT's input (ramp FBP) differs from the tuned FBP method
    s = results["summary"]["views=12"]
    assert s["tv"]["psnr"]["mean"] > s["input"]["psnr"]["mean"]
    truth = load_volume(next((out / "cases").glob("views-12_*")) / "ground-truth.nii.gz").data
    assert truth.min() < -900  # air stays -1000 HU (an absolute value made it +1000)
    assert (out / "grid_views-12_ct_001.png").exists()  # quick mode: the middle slices


def test_bad_bench_requests_get_one_sentence(cli, tmp_path, mri_scan):
    out = tmp_path / "o"
    assert_one_sentence_error(cli("bench", mri_scan, "--modality", "mri", "--settings", "speed=2", "--out", out),
                              mentions="unknown setting")
    assert_one_sentence_error(cli("bench", mri_scan, "--modality", "mri", "--methods", "fbp", "--out", out),
                              mentions="does not apply")
    assert_one_sentence_error(cli("bench", mri_scan, "--modality", "ct", "--methods", "tv", "--out", out),
                              mentions="Hounsfield")
    assert_one_sentence_error(cli("bench", mri_scan, "--modality", "mri", "--methods", "tv", "--steps", "5",
                                  "--out", out), mentions="needs a diffusion method")
    assert_one_sentence_error(cli("bench", tmp_path / "missing.nii.gz", "--modality", "mri", "--out", out))
    assert not out.exists()  # nothing half-written


def test_bm3d_is_left_out_by_default_when_missing_and_refused_by_name_before_any_work(monkeypatch):
    from diffrecon.baselines import denoise

    monkeypatch.setattr(denoise, "bm3d_available", lambda: False)
    assert [s.label for s in parse_methods(None, "denoise", have_prior=False)] == ["median", "tv"]
    with pytest.raises(SettingsError, match="pip install bm3d"):
        parse_methods("tv,bm3d", "ultrasound", have_prior=False)


def test_a_reader_study_is_built_from_a_real_bench_run(cli, tmp_path, mri_scan):
    """bench writes cases/<case>/<method>.nii.gz; study create reads exactly that."""
    out = tmp_path / "bench"
    assert cli("bench", mri_scan, "--modality", "mri", "--settings", "4x", "--methods", "zero-filled,tv",
               "--quick", "--out", out).code == 0
    study = tmp_path / "study"
    made = cli("study", "create", "--cases", out, "--out", study, "--reference", "ground-truth",
               "--readers", "alice,bob")
    assert made.code == 0, made.err
    from diffrecon.study import open_keyed

    with open_keyed(study) as keyed:  # the owner's view: the methods come from the key beside the study
        items = keyed.items()
        assert sorted({i.method for i in items}) == ["tv", "zero-filled"] and len(items) == 4  # 2 slices x 2
    assert cli("study", "report", study).code == 0  # no scores yet: a report that says so


def test_results_show_each_subject_on_its_own():
    """A mean over subjects can hide one where a method loses: results.md adds a per-data-set table."""
    from diffrecon.bench.report import per_subject_table

    rows = [{"task": "4x", "data": d, "slice": s, "method": m, "psnr": p, "ssim": 0.5}
            for d, m, s, p in (("a", "tv", 0, 20.0), ("a", "tv", 1, 22.0), ("a", "diffusion", 0, 25.0),
                               ("a", "diffusion", 1, 25.0), ("b", "tv", 0, 30.0), ("b", "diffusion", 0, 28.0))]
    table = per_subject_table({"per_slice": rows}, "4x")
    assert table[0] == "| method | a | b |"
    assert "| tv | 21.00 / 0.500 | 30.00 / 0.500 |" in table
    assert "| diffusion | 25.00 / 0.500 | 28.00 / 0.500 |" in table
    assert per_subject_table({"per_slice": [r for r in rows if r["data"] == "a"]}, "4x") == []
