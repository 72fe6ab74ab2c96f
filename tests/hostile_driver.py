"""Run the hostile corpus through ``diffrecon``'s ``main`` in this process (started under ``ulimit -v``).

    python hostile_driver.py CASES.json RESULTS.json SECONDS_PER_CASE

Writes, per case: exit status, stderr, stdout, seconds, and the process's peak resident
memory after it. One process for the whole corpus keeps the suite fast (torch is imported
once); an alarm bounds each case's time, so a hang fails that case instead of the run.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import signal
import sys
import time


class Hung(Exception):
    pass


def _alarm(signum, frame):
    raise Hung()


def main() -> None:
    cases_path, results_path, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from diffrecon.cli.main import build_parser, main as diffrecon

    build_parser()  # imports every subcommand (torch included) once, outside the timed cases

    signal.signal(signal.SIGALRM, _alarm)
    results = {}
    for case in json.loads(open(cases_path).read()):
        out, err = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        signal.alarm(seconds)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = diffrecon(["--threads", "1", *case["argv"]])
                except SystemExit as exc:
                    code = int(exc.code or 0)
        except Hung:
            code = "hung"
        except MemoryError:
            code = "MemoryError"
        except BaseException as exc:  # noqa: BLE001 - a traceback is what the test reports
            code = f"{type(exc).__name__}: {exc}"
        finally:
            signal.alarm(0)
        results[case["name"]] = {
            "code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
            "seconds": time.perf_counter() - started,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        with open(results_path, "w") as fh:  # after every case: a crash still leaves what was run
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
