"""The shape every forward operator takes (after deepinv's ``Physics``).

A measurement model is ``y = A(x) + noise``. Each linear operator is one class with

* ``A(x)``: image batch -> measurement batch,
* ``A_adjoint(y)``: the exact adjoint (the transpose, not an approximation),
* ``A_dagger(y)``: a pseudo-inverse (closed form where one exists, otherwise
  conjugate gradients on the normal equations),
* ``solve_normal(rhs, ...)``: solve ``(AᴴA + λI) x = rhs`` (used by DDS-style
  data consistency and by baselines).

Images are torch tensors ``(batch, channels, rows, cols)``; real images have one
channel and are float32, complex MR images are complex64 with one channel. All
operators run batched on whatever device their inputs live on.
"""

from __future__ import annotations

import torch

from .solvers import conjugate_gradient


class LinearOperator:
    """Base class; subclasses implement ``A`` and ``A_adjoint``."""

    #: dtype of the images this operator takes (complex operators accept real input too)
    image_dtype: torch.dtype = torch.float32

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
