"""The shape every forward operator takes (after deepinv's ``Physics``).

A measurement model is ``y = A(x) + noise``. Each linear operator is one class with

* ``A(x)``: image batch -> measurement batch,
* ``A_adjoint(y)``: the exact adjoint (the transpose, not an approximation),
* ``A_dagger(y)``: a pseudo-inverse (closed form where one exists, otherwise
  conjugate gradients on the normal equations),
* ``solve_normal(rhs, ...)``: solve ``(AᴴA + λI) x = rhs`` (used by baselines),
* ``least_squares(x, y, noise_level, iters=...)``: CGLS on ``min ||A x - y||`` from ``x``,
  stopping at the noise level (DDS-style data consistency),
* ``data_consistency(x, y, noise_level, iters=...)``: the image nearest ``x`` that explains
  ``y`` (after deepinv's ``prox_l2``): CGLS by default, closed forms where the operator
  has them (MRI's k-space replacement, the identity's ``y``).

Images are torch tensors ``(batch, channels, rows, cols)``; real images have one
channel and are float32, complex MR images are complex64 with one channel. All
operators run batched on whatever device their inputs live on.
"""

from __future__ import annotations

import torch

from .solvers import cgls, conjugate_gradient, discrepancy


class LinearOperator:
    """Base class; subclasses implement ``A`` and ``A_adjoint``."""

    #: dtype of the images this operator takes (complex operators accept real input too)
    image_dtype: torch.dtype = torch.float32
    #: ``A = I`` (denoising): the measurement is a noisy image, which diffusion guidance
    #: mixes into the sampler's state instead of projecting onto
    is_identity: bool = False

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 - the field's notation
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """AᴴA x."""
        return self.A_adjoint(self.A(x))

    def solve_normal(
        self,
        rhs: torch.Tensor,
        *,
        lam: float = 0.0,
        x0: torch.Tensor | None = None,
        iters: int = 20,
        tol: float = 1e-6,
    ) -> torch.Tensor:
        """Solve ``(AᴴA + lam I) x = rhs`` by conjugate gradients from ``x0``."""
        return conjugate_gradient(lambda v: self.normal(v) + lam * v if lam else self.normal(v), rhs, x0=x0,
                                  iters=iters, tol=tol)

    def A_dagger(self, y: torch.Tensor, *, iters: int = 50) -> torch.Tensor:  # noqa: N802
        """Least-squares pseudo-inverse ``argmin_x ||Ax - y||``; subclasses may override
        with a closed form."""
        return self.solve_normal(self.A_adjoint(y), iters=iters)

    def least_squares(self, x: torch.Tensor, y: torch.Tensor, noise_level: float = 0.0, *,
                      iters: int = 5) -> torch.Tensor:
        """``iters`` CGLS steps on ``min ||A x - y||`` from ``x``; with ``noise_level > 0`` an
        item stops once its residual is down to the noise (the discrepancy principle).

        Started at ``x``, the iterates stay in ``x + range(Aᴴ)``: run to convergence they reach
        the orthogonal projection of ``x`` onto ``{A x = y}``; stopped early (DDS) they stay
        close to ``x``.
        """
        return cgls(self, y, x, iters=iters, stop_residual=discrepancy(y, noise_level, x.shape[0]))

    def data_consistency(self, x: torch.Tensor, y: torch.Tensor, noise_level: float = 0.0, *,
                         iters: int = 30) -> torch.Tensor:
        """The image nearest ``x`` that explains ``y`` (to within the noise when
        ``noise_level > 0``): :meth:`least_squares` run for up to ``iters`` steps. Operators
        with a closed form override this."""
        return self.least_squares(x, y, noise_level, iters=iters)

    def image_shape(self) -> tuple[int, ...] | None:
        """Shape (C, H, W) of one image this operator takes, if fixed."""
        return None

    def _constant(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The precomputed table ``self.<name>`` on ``like``'s device and in its precision.

        Tables are built once (on the CPU, in single precision) in ``__init__``; the first
        call from another device or precision converts and caches them, so the hot loop
        never re-allocates a constant.
        """
        table: torch.Tensor = getattr(self, name)
        double = like.dtype in (torch.float64, torch.complex128)
        if table.is_complex():
            dtype = torch.complex128 if double else torch.complex64
        elif table.is_floating_point():
            dtype = torch.float64 if double else torch.float32
        else:  # index tables keep their integer type
            dtype = table.dtype
        if table.device == like.device and table.dtype == dtype:
            return table
        cache: dict = self.__dict__.setdefault("_constant_cache", {})
        key = (name, like.device, dtype)
        if key not in cache:
            cache[key] = table.to(device=like.device, dtype=dtype)
        return cache[key]
