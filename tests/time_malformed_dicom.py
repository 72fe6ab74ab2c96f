"""How long ``diffrecon info`` takes to refuse each broken DICOM input (a benchmark, not a test).

    python tests/time_malformed_dicom.py [--repeats 5]

Builds the corpus of ``test_malformed_dicom.py`` in a temporary folder and prints the
median seconds of each refusal (the CLI and torch imported once beforehand, so the figure
is the reading alone). Bad input must be refused in bounded time: every case well under
2 s on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import run_cli  # noqa: E402
from test_malformed_dicom import CORPUS  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    from diffrecon.cli.main import build_parser

    build_parser()  # import the CLI and torch behind it before timing
    worst = 0.0
    for build in CORPUS:
        with tempfile.TemporaryDirectory() as folder:
            path, _ = build(Path(folder))
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = run_cli("info", path)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            worst = max(worst, median)
            print(f"{build.__name__:<36} exit {result.code}  {median * 1000:8.1f} ms")
    print(f"slowest refusal: {worst:.3f} s (median of {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
