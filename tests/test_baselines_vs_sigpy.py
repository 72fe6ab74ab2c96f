"""Our TV and L1-wavelet reconstructions hold their own against sigpy's on the same problem.

One 4x single-coil MRI problem (random line mask, centre fraction 0.08, seed 0) on a
128x128 brain slice from a TRAINING block of colin27 (the conftest phantom when the scan
is not installed), with a smooth phase so that the image is genuinely complex. sigpy's
``TotalVariationRecon`` and ``L1WaveletRecon`` (its own Sense linop with the same mask as
weights and a map of ones; its default 100 iterations) and ours (run through
``run_baseline`` with diffrecon's tuned defaults) each get the best weight from the same
grid of absolute weights; ours must be within 0.5 dB PSNR of sigpy's best, or better.
Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_phantom
from diffrecon.baselines import run_baseline
from diffrecon.baselines.tv import regularization_scale
from diffrecon.errors import DiffreconError
from diffrecon.metrics import psnr
from diffrecon.physics import MRIOperator, make_mask
from skimage.transform import resize

sigpy_mri = pytest.importorskip("sigpy.mri")

pytestmark = pytest.mark.slow  # about 15 s on a 2-core machine

#: absolute weights; ours take them divided by max|Aᴴy| (their relative form)
WEIGHTS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SIZE = 128


def _brain_slice() -> np.ndarray:
    """A 128x128 axial slice 35 mm above the AC from colin27's superior training block, in [0, ~1]."""
    try:
        from diffrecon.datasets import load_dataset, training_blocks

        volume = load_dataset("colin27")
        image = training_blocks(volume, "colin27")[-1][5]  # the block above the held-out slab
    except DiffreconError:
        image = make_phantom(3, SIZE, SIZE)[1]
    h, w = image.shape
    side = max(h, w)
    square = np.zeros((side, side), np.float32)
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = image
    square = resize(square, (SIZE, SIZE), anti_aliasing=True)
    return (square / np.percentile(square, 99.5)).astype(np.float32)


@pytest.fixture(scope="module")
def problem():
    magnitude = _brain_slice()
    yy, xx = np.mgrid[-1 : 1 : SIZE * 1j, -1 : 1 : SIZE * 1j]
    image = (magnitude * np.exp(1j * (0.7 * xx + 0.4 * yy**2))).astype(np.complex64)
    mask = make_mask("random", (SIZE, SIZE), 4, center_fraction=0.08, seed=0)
    op = MRIOperator(mask)
    y = op.A(torch.from_numpy(image)[None, None])
    return image, mask, op, y


def _best(scores: dict[float, float]) -> tuple[float, float]:
    weight = max(scores, key=scores.get)
    return weight, scores[weight]


@pytest.mark.parametrize("method", ["tv", "l1-wavelet"])
def test_ours_is_within_half_a_db_of_sigpy(problem, method):
    image, mask, op, y = problem
    truth = np.abs(image)[None]
    scale = regularization_scale(op, y).item()
    kspace = y[0].numpy()  # (1 coil, H, W)
    maps = np.ones((1, SIZE, SIZE), np.complex64)
    weights = mask.astype(np.float32)
    app = sigpy_mri.app.TotalVariationRecon if method == "tv" else sigpy_mri.app.L1WaveletRecon

    theirs, ours = {}, {}
    for weight in WEIGHTS:
        result = app(kspace, maps, weight, weights=weights, show_pbar=False).run()
        theirs[weight] = psnr(truth, np.abs(result)[None])
        mine = run_baseline(method, op, y, modality="mri", params={"lam": weight / scale})
        ours[weight] = psnr(truth, mine.abs()[:, 0].numpy())

    zero_filled = psnr(truth, op.A_dagger(y).abs()[:, 0].numpy())
    (their_weight, their_best), (our_weight, our_best) = _best(theirs), _best(ours)
    table = "\n".join(f"  weight {w:g}: sigpy {theirs[w]:.2f} dB, diffrecon {ours[w]:.2f} dB" for w in WEIGHTS)
    report = (
        f"{method}, 4x MRI, zero-filled {zero_filled:.2f} dB\n{table}\n"
        f"  best: sigpy {their_best:.2f} dB (weight {their_weight:g}), "
        f"diffrecon {our_best:.2f} dB (weight {our_weight:g})"
    )
    print("\n" + report)
    assert our_best >= their_best - 0.5, report
    assert our_best > zero_filled + 1.0, report
