"""The study report: statistics checked against direct scipy/statsmodels/scikit-learn calls, files, edge cases."""

from __future__ import annotations

import csv
import itertools
import math

import numpy as np
import pytest

from study_support import write_cases

READERS = ("ann", "ben", "cat")
METHODS = ("diffusion", "tv", "zero-filled")
TRUE_QUALITY = {"diffusion": 4.3, "tv": 3.4, "zero-filled": 1.8}


@pytest.fixture
def scored_study(tmp_path):
    """3 readers x 10 cases x 3 methods with known scores: diffusion clearly best, zero-filled worst."""
    from diffrecon.study import create_study, open_keyed

    write_cases(tmp_path / "cases", 10, METHODS, slices=1, size=8)
    folder = create_study([str(tmp_path / "cases")], tmp_path / "study", readers=list(READERS),
                          questions=["quality", "artefact", "comment"]).folder
    rng = np.random.default_rng(11)
    given: dict[tuple[str, str, str], int] = {}
    with open_keyed(folder) as store:
        quality, artefact, comment = store.questions()
        for item in store.items():
            case_effect = rng.normal(0, 0.4)
            for reader in READERS:
                score = int(np.clip(round(TRUE_QUALITY[item.method] + case_effect + rng.normal(0, 0.5)), 1, 5))
                store.answer(reader, item.id, quality, score, add_seconds=float(rng.uniform(2, 9)))
                store.answer(reader, item.id, artefact, int(item.method == "zero-filled" or rng.random() < 0.1))
                given[(reader, item.case_id, item.method)] = score
        item = store.items()[0]
        store.answer("ann", item.id, comment, "streaks at the top")
    return folder, given


def test_statistics_match_the_libraries_computed_directly(scored_study):
    from scipy import stats
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    from diffrecon.study import build_report, open_keyed

    folder, given = scored_study
    with open_keyed(folder) as store:
        report = build_report(store)
    assert report.completion == {r: (30, 30) for r in READERS}
    cases = report.cases

    by_method = {s.method: s for s in report.likert["quality"]}
    for m in METHODS:
        x = np.array([v for (_, _, method), v in given.items() if method == m], float)
        s = by_method[m]
        assert s.n == 30 and s.mean == pytest.approx(x.mean()) and s.sd == pytest.approx(x.std(ddof=1))
        low, high = stats.t.interval(0.95, 29, loc=x.mean(), scale=stats.sem(x))
        assert s.ci == pytest.approx((low, high))
        assert s.reader_means["ben"] == pytest.approx(np.mean([given[("ben", c, m)] for c in cases]))
    assert by_method["diffusion"].mean > by_method["tv"].mean > by_method["zero-filled"].mean

    images = [(c, m) for c in cases for m in METHODS]
    matrix = np.array([[given[(r, *im)] for r in READERS] for im in images])
    assert report.fleiss["quality"].n_items == 30
    assert report.fleiss["quality"].value == pytest.approx(fleiss_kappa(aggregate_raters(matrix)[0], method="fleiss"))
    pairs = {(p.reader_a, p.reader_b): p.kappa.value for p in report.cohen["quality"]}
    for a, b in itertools.combinations(range(3), 2):
        expected = cohen_kappa_score(matrix[:, a], matrix[:, b], weights="linear", labels=[1, 2, 3, 4, 5])
        assert pairs[(READERS[a], READERS[b])] == pytest.approx(expected)

    comparisons = {(c.method_a, c.method_b): c for c in report.paired["quality"]}
    assert len(comparisons) == 3
    mean_of = {(c, m): np.mean([given[(r, c, m)] for r in READERS]) for c in cases for m in METHODS}
    best = comparisons[("diffusion", "zero-filled")]
    a = np.array([mean_of[(c, "diffusion")] for c in cases])
    b = np.array([mean_of[(c, "zero-filled")] for c in cases])
    assert best.n_cases == 10 and best.mean_difference == pytest.approx((a - b).mean()) and best.mean_difference > 1.5
    assert best.wilcoxon_p == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert best.ttest_p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert best.ttest_p_adjusted == pytest.approx(min(1.0, 3 * best.ttest_p))  # Bonferroni over 3 pairs
    assert best.wilcoxon_p_adjusted < 0.05

    artefacts = {p.method: p for p in report.yesno["artefact"]}
    assert artefacts["zero-filled"].fraction == 1.0 and artefacts["diffusion"].fraction < 0.5
    assert report.n_comments == 1


def test_report_files_csv_long_format_and_a_readable_chart(scored_study, tmp_path):
    from PIL import Image

    from diffrecon.study import open_keyed, write_report
    from diffrecon.study.report import render_text

    folder, given = scored_study
    with open_keyed(folder) as store:
        report, files = write_report(store, tmp_path / "out")
        n_answers = store.count_answers()
    assert [f.name for f in files] == ["report.md", "scores_long.csv", "scores_by_method.png"]
    with open(tmp_path / "out" / "scores_long.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["reader", "case", "method", "question", "score", "seconds"]
    assert len(rows) - 1 == n_answers == 3 * 30 * 2 + 1
    quality_rows = [r for r in rows[1:] if r[3] == "quality"]
    assert all(int(r[4]) == given[(r[0], r[1], r[2])] and 2 <= float(r[5]) <= 9 for r in quality_rows)
    assert {r[4] for r in rows[1:] if r[3] == "artefact"} <= {"0", "1"}

    png = tmp_path / "out" / "scores_by_method.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        w, h = im.size
        pixels = np.asarray(im.convert("L"), float)
    assert 600 <= w <= 2000 and 400 <= h <= 1400
    assert pixels.std() > 10  # bars, dots and text drawn, not a blank canvas

    md = (tmp_path / "out" / "report.md").read_text()
    text = render_text(report)
    for needle in ("Fleiss' kappa", "weighted Cohen's kappa", "diffusion vs zero-filled", "Wilcoxon", "95 % CI"):
        assert needle in md and needle in text


def test_degenerate_studies_get_a_sentence_not_a_crash(tmp_path):
    from diffrecon.study import build_report, create_study, open_keyed
    from diffrecon.study.report import render_text, write_report

    write_cases(tmp_path / "cases", 3, ("tv", "diffusion"), slices=1, size=8)
    folder = create_study([str(tmp_path / "cases")], tmp_path / "study", readers=["ann", "ben"]).folder
    with open_keyed(folder) as store:
        report, files = write_report(store, tmp_path / "empty")
        assert "No scores yet" in render_text(report)
        assert [f.name for f in files] == ["report.md", "scores_long.csv"]  # no chart of nothing

        quality = store.questions()[0]
        for item in store.items():
            store.answer("ann", item.id, quality, 4)
        text = render_text(build_report(store))
        assert "needs two or more readers; only one reader (ann)" in text
        assert "the two methods scored the same on every case" in text

        for item in store.items():
            store.answer("ben", item.id, quality, 4)
        report = build_report(store)
        assert report.fleiss["quality"].value is None and "undefined" in report.fleiss["quality"].message
        assert report.cohen["quality"][0].kappa.value is None
        assert math.isnan(report.paired["quality"][0].wilcoxon_p)
        assert "undefined" in render_text(report)
