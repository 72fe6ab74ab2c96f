"""MRI reconstructed on a grid finer than the scan's (``DiffusionOptions.fine_grid``).

A scan's k-space is the centre block of the k-space of the same object on a grid F times
finer (times F: the orthonormal FFT's scale for F² times the pixels). So the measurements
stay exactly what they were: the fine problem's mask is the scan's mask in that block and
zero outside it, the prior fills in the frequencies the scan never had, and every frame
returns to the scan's grid by cropping its k-space back to the block (sinc interpolation
and its exact inverse). Everything in between (dds-tv's weight choice, the blend with TV,
the expert, the samples) runs on the fine problem as on any larger scan.

Measured on the validation subjects with the bundled expert
(``resources/results/fine-grid/README.md``): on a grid twice as fine, DDS alone gains at 4x
(+0.40 dB; +1.2 on the one 256² slice) but loses at 8x (-0.43), and MRI's default (dds-tv
blended with TV) loses 0.22 dB at 4x and 0.14 at 8x; so it is off by default (``fine_grid = 1``)
and stays for comparisons (``bench ... diffusion:ddim/dds/25/noblend+grid2``).
It costs F² the pixels, so about F² the time.

The variance (the σ map) is returned by the same k-space crop: a smoothed map, not the
exact variance of the cropped samples (that would need every sample's image).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from ..errors import SettingsError
from ..measurements import ReconProblem
from ..physics.mri import MRIOperator, fft2c, ifft2c
from .checkpoint import Prior
from .options import DiffusionOptions

if TYPE_CHECKING:  # reconstruction imports this module: the frame type only for the checker
    from .reconstruction import ReconFrame


class FineGrid:
    """The map between a scan's grid ``(H, W)`` and the grid ``factor`` times finer."""

    def __init__(self, height: int, width: int, factor: int):
        self.height, self.width, self.factor = height, width, factor
        self.fine = (factor * height, factor * width)
        # DC sits at index N // 2 of a centred spectrum, on both grids
        self.top, self.left = self.fine[0] // 2 - height // 2, self.fine[1] // 2 - width // 2

    def _block(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def _embed(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (scan grid, centred) as the block of a fine-grid array that is zero elsewhere."""
        out = t.new_zeros((*t.shape[:-2], *self.fine))
        rows, cols = self._block()
        out[..., rows, cols] = t
        return out

    def pad_kspace(self, k: torch.Tensor) -> torch.Tensor:
        """Centred k-space on the scan's grid -> the fine grid's (zero outside the block, times F)."""
        return self._embed(k * self.factor)

    def crop_kspace(self, k: torch.Tensor) -> torch.Tensor:
        rows, cols = self._block()
        return k[..., rows, cols] / self.factor

    def up(self, image: torch.Tensor) -> torch.Tensor:
        """A scan-grid image on the fine grid (sinc interpolation); real stays real (its real part: an
        even axis's Nyquist bin has no twin on the finer grid, so half of it is lost there)."""
        fine = ifft2c(self.pad_kspace(fft2c(image.to(torch.complex64))))
        return fine if image.is_complex() else fine.real.to(image.dtype)

    def down(self, image: torch.Tensor) -> torch.Tensor:
        """A fine-grid image back on the scan's grid (the exact left inverse of :meth:`up`)."""
        coarse = ifft2c(self.crop_kspace(fft2c(image.to(torch.complex64))))
        return coarse if image.is_complex() else coarse.real.to(image.dtype)

    def problem(self, problem: ReconProblem) -> ReconProblem:
        """The same measurements, posed on the fine grid."""
        op = problem.operator
        assert isinstance(op, MRIOperator)
        maps = None if op.maps is None else self.up(op.maps)
        fine_op = MRIOperator(self._embed(op.mask), maps)  # nothing measured outside the block
        y = self.pad_kspace(problem.y)
        reference = None if problem.reference is None else self.up(problem.reference).clamp_min(0)
        return replace(problem, operator=fine_op, y=y, observed=fine_op.zero_filled(y), reference=reference,
                       noise_level=problem.noise_level * self.factor)

    def frame(self, frame: ReconFrame) -> ReconFrame:
        """A fine-grid frame on the scan's grid."""

        def down(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else self.down(t)

        variance = None if frame.variance is None else self.down(frame.variance).clamp_min(0)
        return replace(frame, x_t=self.down(frame.x_t), x0=self.down(frame.x0), variance=variance,
                       prior_mean=down(frame.prior_mean), baseline=down(frame.baseline))


def check_fine_grid(problem: ReconProblem, options: DiffusionOptions) -> None:
    """Refuse, in one sentence, a finer grid for anything but Cartesian MRI (CT's geometry has no such block)."""
    if not isinstance(problem.operator, MRIOperator):
        raise SettingsError(f"a finer reconstruction grid (fine_grid {options.fine_grid}) is for Cartesian MRI only; "
                            f"this is {problem.modality}")


def stream_on_fine_grid(problem: ReconProblem, prior: Prior, options: DiffusionOptions, *,
                        baseline: torch.Tensor | None = None,
                        neighbours: Mapping[int, torch.Tensor] | None = None) -> Generator[ReconFrame, None, None]:
    """:func:`.reconstruction.stream_reconstruction` of ``problem`` on the grid ``options.fine_grid``
    times finer, every frame returned to the scan's grid."""
    from .reconstruction import stream_reconstruction

    check_fine_grid(problem, options)
    height, width = problem.observed.shape[-2:]
    grid = FineGrid(int(height), int(width), int(options.fine_grid))
    fine_neighbours = None if neighbours is None else {i: grid.up(n) for i, n in neighbours.items()}
    frames = stream_reconstruction(grid.problem(problem), prior, replace(options, fine_grid=1),
                                   baseline=None if baseline is None else grid.up(baseline),
                                   neighbours=fine_neighbours)
    try:
        for frame in frames:
            yield grid.frame(frame)
    finally:
        frames.close()
