"""``diffrecon bench``: methods side by side on simulated measurements, in numbers and pictures.

* :mod:`.tasks` parses what to compare (measurement settings, methods),
* :mod:`.runner` runs every method on every task x scan x slice (same measurements),
* :mod:`.statistics` summarises and runs the paired tests,
* :mod:`.figures` draws the image grids and the steps-ablation plot,
* :mod:`.report` writes ``results.json`` and ``results.md``.

Timing micro-benchmarks of single components (operators, one diffusion run) are the
scripts in :mod:`diffrecon.benchmarks`.
"""

from .runner import BenchData, BenchRun, load_bench_data, run_bench
from .tasks import MethodSpec, Task, parse_methods, parse_settings, parse_steps

__all__ = ["BenchData", "BenchRun", "MethodSpec", "Task", "load_bench_data", "parse_methods", "parse_settings",
           "parse_steps", "run_bench"]
