"""Every case of the generated hostile corpus (``hostile_corpus.py``): one sentence, exit 2,
bounded time and memory, run in one subprocess under ``ulimit -v``.

The address-space limit is what the process may map beyond what importing torch and
diffrecon maps already; the budget (``diffrecon.io.budget``) must see it and refuse
before reading, and nothing may allocate past it (a MemoryError would be a failure).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hostile_corpus import CASES, build_corpus

ADDRESS_SPACE_MIB = 3072  # ulimit -v for the whole run (importing torch maps ~750 MiB)
SECONDS_PER_CASE = 20
PEAK_RSS_MIB = 1500  # no case may make the process hold more than this


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hostile")
    cases = build_corpus(root / "cases")
    (root / "cases.json").write_text(json.dumps(cases))
    driver = Path(__file__).with_name("hostile_driver.py")
    command = (f"ulimit -v {ADDRESS_SPACE_MIB * 1024} && exec {sys.executable} {driver} "
               f"{root / 'cases.json'} {root / 'results.json'} {SECONDS_PER_CASE}")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                          timeout=SECONDS_PER_CASE * len(cases) + 60,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "DIFFRECON_THREADS": "1"})
    results = json.loads((root / "results.json").read_text()) if (root / "results.json").exists() else {}
    results["_driver"] = {"code": done.returncode, "stderr": done.stderr[-2000:]}
    return {"cases": {c["name"]: c for c in cases}, "results": results}


@pytest.mark.parametrize("name", [c.__name__ for c in CASES])
def test_hostile_case_is_one_sentence_exit_2_bounded(corpus_results, name):
    result = corpus_results["results"].get(name)
    assert result is not None, f"the driver never got to {name}: {corpus_results['results']['_driver']}"
    expected = corpus_results["cases"][name]["expected"]
    lines = [ln for ln in result["stderr"].splitlines() if ln.strip()]
    assert result["code"] == 2, (result["code"], result["stderr"][-1500:])
    assert len(lines) == 1 and lines[0].startswith("diffrecon: error: "), result["stderr"]
    assert expected.lower() in lines[0].lower(), (expected, lines[0])
    assert result["seconds"] < SECONDS_PER_CASE
    assert result["peak_rss_mib"] < PEAK_RSS_MIB
