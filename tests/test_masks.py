"""k-space sampling masks: acceleration, fully sampled centre, seeding, settings errors."""

from __future__ import annotations

import numpy as np
import pytest
from diffrecon.errors import SettingsError
from diffrecon.physics import MASK_KINDS, achieved_acceleration, calibration_region, make_mask

# Widths from 64 up (a 1D mask on fewer columns cannot hit 12x within 10%: 32 / 3 lines is
# 10.7x), odd widths and heights included.
SHAPES = [(64, 64), (72, 97), (65, 128), (48, 81)]
ACCELERATIONS = list(range(2, 13))


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_achieved_acceleration_is_within_ten_percent(kind: str) -> None:
    for shape in SHAPES:
        for acceleration in ACCELERATIONS:
            mask = make_mask(kind, shape, acceleration, seed=1)
            assert mask.shape == shape and mask.dtype == bool
            achieved = achieved_acceleration(mask)
            assert abs(achieved / acceleration - 1) <= 0.10, (kind, shape, acceleration, achieved)


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_line_masks_sample_whole_columns_with_a_full_centre(kind: str) -> None:
    for shape, acceleration in [((64, 64), 4), ((40, 97), 8), ((33, 65), 3)]:
        mask = make_mask(kind, shape, acceleration, seed=5)
        assert (mask == mask[:1]).all(), "a line mask samples every row of a chosen column"
        width = shape[1]
        n_center = round(width * 0.32 / acceleration)  # the default centre fraction
        rows, cols = calibration_region(mask)
        assert rows == shape[0] and cols >= n_center
        assert mask[0, width // 2], "the DC column is sampled"


def test_equispaced_outer_lines_are_evenly_spaced() -> None:
    mask = make_mask("equispaced", (32, 256), 8, center_fraction=0.04, seed=2)
    columns = np.flatnonzero(mask[0])
    centre = set(range((256 - 10 + 1) // 2, (256 - 10 + 1) // 2 + 10))
    left = [c for c in columns if c < min(centre)]
    gaps = np.diff(left)
    assert gaps.max() - gaps.min() <= 1  # floor of a constant real spacing


@pytest.mark.parametrize("kind", ["gaussian2d", "poisson"])
def test_2d_masks_have_a_calibration_box_and_variable_density(kind: str) -> None:
    shape, acceleration = (96, 80), 6
    mask = make_mask(kind, shape, acceleration, seed=0)
    rows, cols = calibration_region(mask)
    expected = round(0.32 / acceleration * 96), round(0.32 / acceleration * 80)
    assert rows >= expected[0] and cols >= expected[1]
    # Denser near the centre than near the edges.
    yy, xx = np.meshgrid(np.linspace(-1, 1, 96), np.linspace(-1, 1, 80), indexing="ij")
    radius = np.sqrt(yy**2 + xx**2)
    assert mask[radius < 0.3].mean() > 2 * mask[radius > 0.8].mean()
    assert not (mask == mask[:1]).all(), "a 2D mask is not a line mask"


def test_poisson_disc_points_keep_their_distance() -> None:
    """Away from the centre, no two samples of the Poisson-disc mask touch (a random mask of
    the same density would have many neighbouring pairs)."""
    mask = make_mask("poisson", (96, 96), 8, seed=3)
    yy, xx = np.meshgrid(np.linspace(-1, 1, 96), np.linspace(-1, 1, 96), indexing="ij")
    outer = mask & (np.sqrt(yy**2 + xx**2) > 0.6)
    neighbours = (outer[1:, :] & outer[:-1, :]).sum() + (outer[:, 1:] & outer[:, :-1]).sum()
    assert outer.sum() > 100 and neighbours == 0


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_same_seed_same_mask_other_seed_other_mask(kind: str) -> None:
    a = make_mask(kind, (64, 72), 4, seed=7)
    b = make_mask(kind, (64, 72), 4, seed=7)
    c = make_mask(kind, (64, 72), 4, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_default_centre_fraction_follows_fastmri() -> None:
    for acceleration, fraction in [(4, 0.08), (8, 0.04)]:
        mask = make_mask("random", (16, 200), acceleration)
        assert calibration_region(mask)[1] >= round(200 * fraction)
    mask = make_mask("equispaced", (16, 200), 4, center_fraction=0.1)
    assert calibration_region(mask)[1] >= 20


@pytest.mark.parametrize(
    "kind, shape, acceleration, center_fraction, words",
    [
        ("random", (64, 64), 1.5, None, "outside the supported range"),
        ("poisson", (64, 64), 13, None, "outside the supported range"),
        ("random", (32, 32), 12, None, "cannot be matched within 10%"),
        ("equispaced", (64, 64), 4, 0.3, "centre fraction"),
        ("spiral", (64, 64), 4, None, "unknown mask kind"),
        ("gaussian2d", (4, 64), 4, None, "at least 8 x 8"),
    ],
)
def test_bad_settings_raise_one_sentence(kind, shape, acceleration, center_fraction, words) -> None:
    with pytest.raises(SettingsError) as info:
        make_mask(kind, shape, acceleration, center_fraction)
    message = str(info.value)
    assert words.lower() in message.lower()
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message
