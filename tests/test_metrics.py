"""Metrics follow fastMRI's conventions and agree with hand-computed values and skimage."""

from __future__ import annotations


import numpy as np
import pytest
from conftest import make_phantom
from diffrecon.errors import DiffreconError
from diffrecon.metrics import (
    Stopwatch,
    evaluate,
    evaluate_slices,
    format_table,
    mae,
    nmse,
    psnr,
    ssim,
)
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


@pytest.fixture
def volume() -> np.ndarray:
    return make_phantom(4, 48, 48).astype(np.float64)


def test_psnr_of_a_uniform_error_is_known_in_closed_form(volume):
    # An error of 0.01 everywhere with a peak of 1.0: PSNR = 10 log10(1 / 1e-4) = 40 dB.
    ref = volume / volume.max()
    assert psnr(ref, ref + 0.01) == pytest.approx(40.0, abs=1e-9)
    # The data range is the volume's maximum: halving the image (and the error) keeps PSNR.
    assert psnr(ref / 2, ref / 2 + 0.005) == pytest.approx(40.0, abs=1e-9)
    assert psnr(ref, ref) == float("inf")


def test_psnr_and_ssim_match_skimage_with_fastmri_conventions(volume):
    rng = np.random.default_rng(1)
    est = volume + rng.normal(0, 0.05, volume.shape)
    peak = volume.max()
    assert psnr(volume, est) == pytest.approx(peak_signal_noise_ratio(volume, est, data_range=peak), rel=1e-12)
    expected_ssim = np.mean([structural_similarity(r, e, data_range=peak, win_size=7) for r, e in zip(volume, est)])
    assert ssim(volume, est) == pytest.approx(expected_ssim, rel=1e-12)
    assert 0.0 < ssim(volume, est) < 1.0


def test_ssim_uses_the_volume_maximum_not_each_slice_maximum(volume):
    # Dim one slice: with a volume-wide data range its SSIM differs from a per-slice one.
    volume = volume.copy()
    volume[0] *= 0.2
    est = volume + np.random.default_rng(2).normal(0, 0.02, volume.shape)
    per_slice_range = np.mean(
        [structural_similarity(r, e, data_range=r.max(), win_size=7) for r, e in zip(volume, est)]
    )
    assert ssim(volume, est) != pytest.approx(per_slice_range, rel=1e-3)


def test_identical_images_score_perfectly(volume):
    scores = evaluate(volume, volume)
    assert scores["ssim"] == pytest.approx(1.0)
    assert scores["nmse"] == 0.0 and scores["mae"] == 0.0 and scores["psnr"] == float("inf")


def test_nmse_is_scale_invariant_and_hand_checkable(volume):
    est = volume * 0.9  # error is exactly 10 % of the reference: NMSE = 0.01
    assert nmse(volume, est) == pytest.approx(0.01, rel=1e-12)
    assert nmse(volume * 37.0, est * 37.0) == pytest.approx(0.01, rel=1e-12)
    assert mae(volume, volume + 0.25) == pytest.approx(0.25)


def test_complex_inputs_are_scored_by_magnitude(volume):
    phase = np.exp(1j * np.linspace(0, 3, volume.size).reshape(volume.shape))
    assert evaluate(volume, volume * phase)["nmse"] == pytest.approx(0.0, abs=1e-20)


def test_evaluate_matches_the_single_metric_functions(volume):
    est = volume + np.random.default_rng(3).normal(0, 0.03, volume.shape)
    scores = evaluate(volume, est)
    assert scores == pytest.approx({"psnr": psnr(volume, est), "ssim": ssim(volume, est),
                                    "nmse": nmse(volume, est), "mae": mae(volume, est)})


def test_per_slice_rows_use_the_volume_range(volume):
    est = volume.copy()
    est[2] += 0.1  # only slice 2 is wrong
    rows = evaluate_slices(volume, est)
    assert [r["slice"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["psnr"] == float("inf") and rows[0]["ssim"] == pytest.approx(1.0)
    assert rows[2]["psnr"] == pytest.approx(10 * np.log10(volume.max() ** 2 / 0.01))
    assert rows[2]["mae"] == pytest.approx(0.1)
    table = format_table(rows)
    assert len(table.splitlines()) == 5 and "psnr" in table.splitlines()[0]


def test_a_single_2d_image_counts_as_one_slice(volume):
    assert psnr(volume[1], volume[1] + 0.01) == pytest.approx(psnr(volume[1:2], volume[1:2] + 0.01))


def test_bad_inputs_raise_one_sentence_errors(volume):
    with pytest.raises(DiffreconError, match="shape"):
        evaluate(volume, volume[:2])
    with pytest.raises(DiffreconError, match="no positive value"):
        psnr(np.zeros((1, 16, 16)), np.ones((1, 16, 16)))
    with pytest.raises(DiffreconError, match="at least 7x7"):
        ssim(np.ones((1, 5, 5)), np.ones((1, 5, 5)))


def test_stopwatch_accumulates_only_the_timed_blocks(monkeypatch):
    import diffrecon.metrics as metrics

    # A clock that reads these times in turn: block 1 runs 0.02 s, block 2 runs 0.5 s, the
    # 1 s between them is outside any block. (A wall-clock bound here would test the machine.)
    ticks = iter([10.0, 10.02, 11.02, 11.52])
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(ticks))
    watch = Stopwatch()
    with watch.running():
        pass
    with watch.running():
        pass
    assert watch.laps == pytest.approx([0.02, 0.5])
    assert watch.seconds == pytest.approx(0.52)
    assert watch.seconds_per_slice(4) == pytest.approx(0.13)
