"""``diffrecon bench``: methods side by side on simulated measurements, in numbers and pictures.

* :mod:`.tasks` parses what to compare (measurement settings, methods),
* :mod:`.runner` runs every method on every task x scan x slice (same measurements),
* :mod:`.statistics` summarises and runs the paired tests,
* :mod:`.figures` draws the image grids and the steps-ablation plot,
* :mod:`.results` assembles ``results.json`` (statistics, figures, provenance),
* :mod:`.report` writes ``results.json`` and ``results.md``.

Developer measurements of single components (operator and diffusion speed, the quality
sweep behind the diffusion defaults) are the scripts in :mod:`diffrecon.experiments`,
not part of ``diffrecon bench``.
"""

from .runner import BenchData, BenchRun, load_bench_data, run_bench
from .tasks import MethodSpec, Task, parse_methods, parse_settings, parse_steps

__all__ = ["BenchData", "BenchRun", "MethodSpec", "Task", "load_bench_data", "parse_methods", "parse_settings",
           "parse_steps", "run_bench"]
