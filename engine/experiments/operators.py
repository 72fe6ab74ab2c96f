"""Time the forward operators: ``python -m diffrecon.experiments.operators [--device cuda]``.

Prints, for each operator at 256 x 256, the time to build it (masks, coil maps and the CT
sample grid included where they are the operator's constants) and the median time of one
forward (``A``) and one adjoint (``A_adjoint``) call on a batch of images. Speed targets
are checked here, not in timed unit tests.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from diffrecon.physics import LinearOperator, MRIOperator, ParallelBeamRadon, make_mask, simulate_coil_maps

SIZE = 256


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(call: Callable[[], object], device: torch.device, repeats: int) -> float:
    call()  # warm-up: first-call allocations and device caches
    _synchronise(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _synchronise(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _cases() -> dict[str, Callable[[], LinearOperator]]:
    mask = make_mask("random", (SIZE, SIZE), 4)
    return {
        "MRI single-coil 4x": lambda: MRIOperator(mask),
        "MRI 8-coil 4x": lambda: MRIOperator(mask, simulate_coil_maps(8, SIZE, SIZE)),
        "Radon 180 views": lambda: ParallelBeamRadon(SIZE, 180),
        "Radon 60 views": lambda: ParallelBeamRadon(SIZE, 60),
    }


def run(device: str = "cpu", batch: int = 1, repeats: int = 5) -> list[tuple[str, float, float, float]]:
    """(name, build ms, forward ms, adjoint ms) for every operator."""
    dev = torch.device(device)
    rows = []
    for name, build in _cases().items():
        start = time.perf_counter()
        op = build()
        build_ms = (time.perf_counter() - start) * 1e3
        dtype = op.image_dtype
        x = torch.randn(batch, 1, SIZE, SIZE, dtype=dtype, device=dev)
        y = op.A(x)
        forward_ms = _median_ms(lambda op=op, x=x: op.A(x), dev, repeats)
        adjoint_ms = _median_ms(lambda op=op, y=y: op.A_adjoint(y), dev, repeats)
        rows.append((name, build_ms, forward_ms, adjoint_ms))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = run(args.device, args.batch, args.repeats)
    print(f"{SIZE} x {SIZE}, batch {args.batch}, {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'operator':<22}{'build ms':>10}{'A ms':>10}{'A^H ms':>10}")
    for name, build_ms, forward_ms, adjoint_ms in rows:
        print(f"{name:<22}{build_ms:>10.1f}{forward_ms:>10.1f}{adjoint_ms:>10.1f}")


if __name__ == "__main__":
    main()
