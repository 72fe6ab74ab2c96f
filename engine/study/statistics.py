"""The statistics of a reader study: every test and coefficient from a maintained library.

* per method and Likert question: n, mean, SD and a t-based 95 % CI (scipy.stats);
* agreement: Fleiss' kappa across readers over the images every reader scored
  (statsmodels' ``aggregate_raters`` + ``fleiss_kappa``), and the linearly weighted
  Cohen's kappa of each reader pair (scikit-learn's ``cohen_kappa_score``);
* paired comparisons of each method pair on per-case means over readers: mean
  difference, Wilcoxon signed-rank and paired t-test p values (scipy.stats), both
  Bonferroni-corrected over the pairs (statsmodels' ``multipletests``);
* yes/no questions: the fraction "yes" per method with a Wilson 95 % CI (statsmodels);
* per-reader completion.

Degenerate studies (no scores, one reader, identical scores) get a message, never a
crash. :mod:`.report` presents a :class:`StudyReport` as text, Markdown, CSV and a chart.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .key import KeyedStudy
from .store import Question, StudyStore


@dataclass
class LongRow:
    reader: str
    case: str
    method: str
    question: str
    score: Any
    seconds: float


@dataclass
class MethodStats:
    method: str
    n: int
    mean: float
    sd: float  # nan with fewer than 2 scores
    ci: tuple[float, float]  # nan with fewer than 2 scores
    reader_means: dict[str, float] = field(default_factory=dict)


@dataclass
class Kappa:
    value: float | None  # None: not computable (the message says why)
    n_items: int
    message: str = ""


@dataclass
class PairKappa:
    reader_a: str
    reader_b: str
    kappa: Kappa


@dataclass
class PairedComparison:
    method_a: str
    method_b: str
    n_cases: int
    mean_difference: float  # a - b, on per-case means over readers
    wilcoxon_p: float
    ttest_p: float
    wilcoxon_p_adjusted: float = math.nan
    ttest_p_adjusted: float = math.nan
    message: str = ""


@dataclass
class Proportion:
    method: str
    n: int
    yes: int
    ci: tuple[float, float]

    @property
    def fraction(self) -> float:
        return self.yes / self.n if self.n else math.nan


@dataclass
class StudyReport:
    study: Path
    cases: list[str]
    methods: list[str]
    readers: list[str]
    questions: list[Question]
    rows: list[LongRow]
    completion: dict[str, tuple[int, int]]  # reader -> (scored images, images)
    reading_seconds: dict[str, float]  # reader -> total seconds on cases
    likert: dict[str, list[MethodStats]] = field(default_factory=dict)
    fleiss: dict[str, Kappa] = field(default_factory=dict)
    fleiss_readers: dict[str, list[str]] = field(default_factory=dict)
    cohen: dict[str, list[PairKappa]] = field(default_factory=dict)
    paired: dict[str, list[PairedComparison]] = field(default_factory=dict)
    paired_message: dict[str, str] = field(default_factory=dict)
    yesno: dict[str, list[Proportion]] = field(default_factory=dict)
    n_comments: int = 0
    seconds_to_compute: float = 0.0

    @property
    def has_scores(self) -> bool:
        return any(r.question != "comment" for r in self.rows)


# ----- reading the answers -----

def long_rows(store: KeyedStudy) -> list[LongRow]:
    """Every answer with its case, method and the reader's seconds on that image."""
    items = {item.id: item for item in store.items()}
    seconds = store.reading_seconds()
    order = {q.id: i for i, q in enumerate(store.questions())}
    case_rank = {c: i for i, c in enumerate(store.cases())}
    method_rank = {m: i for i, m in enumerate(store.methods())}
    rows = [LongRow(a.reader, items[a.item].case_id, items[a.item].method, a.question, a.value,
                    round(seconds.get((a.reader, a.item), 0.0), 1))
            for a in store.answers() if a.item in items]
    rows.sort(key=lambda r: (r.reader, case_rank.get(r.case, 0), method_rank.get(r.method, 0), order.get(r.question, 0)))
    return rows


def completion(store: StudyStore | KeyedStudy) -> tuple[dict[str, tuple[int, int]], dict[str, float]]:
    """Per reader: (images with every required question answered, images), and seconds spent reading."""
    items = store.image_ids()
    required = [q.id for q in store.questions() if q.required]
    answered: dict[tuple[str, str], set[str]] = defaultdict(set)
    for a in store.answers():
        answered[(a.reader, a.item)].add(a.question)
    done = {reader: (sum(all(q in answered.get((reader, i), ()) for q in required) for i in items), len(items))
            for reader in store.readers()}
    seconds: dict[str, float] = defaultdict(float)
    for (reader, _), s in store.reading_seconds().items():
        seconds[reader] += s
    return done, dict(seconds)


def method_stats(method: str, values: list[float], reader_means: dict[str, float]) -> MethodStats:
    from scipy import stats

    x = np.asarray(values, float)
    n = int(x.size)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return MethodStats(method, n, mean, math.nan, (math.nan, math.nan), reader_means)
    sd = float(x.std(ddof=1))
    if sd == 0:
        ci = (mean, mean)
    else:
        low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=sd / math.sqrt(n))
        ci = (float(low), float(high))
    return MethodStats(method, n, mean, sd, ci, reader_means)


def fleiss_kappa_of(matrix: np.ndarray) -> Kappa:
    """Fleiss' kappa of an (images x readers) matrix of scores (statsmodels)."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    n_items = int(matrix.shape[0])
    if n_items == 0:
        return Kappa(None, 0, "no image has been scored by every reader yet")
    if np.unique(matrix).size == 1:
        return Kappa(None, n_items, "undefined: every reader gave every one of these images the same score")
    table, _ = aggregate_raters(matrix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(fleiss_kappa(table, method="fleiss"))
    if not math.isfinite(value):
        return Kappa(None, n_items, "undefined for these scores")
    return Kappa(value, n_items)


def weighted_cohen_kappa(a: list[int], b: list[int], scale: list[int]) -> Kappa:
    """Linearly weighted Cohen's kappa of two readers' scores on the same images (scikit-learn)."""
    from sklearn.metrics import cohen_kappa_score

    if not a:
        return Kappa(None, 0, "no image scored by both")
    if len(set(a) | set(b)) == 1:
        return Kappa(None, len(a), "undefined: both gave every shared image the same score")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(cohen_kappa_score(a, b, labels=scale, weights="linear"))
    if not math.isfinite(value):
        return Kappa(None, len(a), "undefined for these scores")
    return Kappa(value, len(a))


def paired_comparison(method_a: str, method_b: str, a: np.ndarray, b: np.ndarray) -> PairedComparison:
    """Wilcoxon signed-rank and paired t-test of two methods' per-case scores (scipy.stats)."""
    from scipy import stats

    diff = a - b
    n = int(diff.size)
    mean_diff = float(diff.mean()) if n else math.nan
    if n < 2:
        return PairedComparison(method_a, method_b, n, mean_diff, math.nan, math.nan,
                                message="fewer than 2 cases with both methods scored")
    if np.all(diff == 0):
        return PairedComparison(method_a, method_b, n, 0.0, math.nan, math.nan,
                                message="the two methods scored the same on every case")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = float(stats.wilcoxon(a, b).pvalue)
        t = float(stats.ttest_rel(a, b).pvalue)
    return PairedComparison(method_a, method_b, n, mean_diff, w, t)


def bonferroni(pvalues: list[float]) -> list[float]:
    """Bonferroni-adjusted p values over every pair (statsmodels); a pair without a test stays NaN.

    Pairs with no p value still count among the comparisons (as p = 1), so the
    correction is over the number of pairs whatever the data.
    """
    from statsmodels.stats.multitest import multipletests

    if not pvalues:
        return []
    filled = [p if math.isfinite(p) else 1.0 for p in pvalues]
    adjusted = multipletests(filled, method="bonferroni")[1]
    return [float(a) if math.isfinite(p) else math.nan for a, p in zip(adjusted, pvalues)]


def yes_fraction(method: str, values: list[int]) -> Proportion:
    from statsmodels.stats.proportion import proportion_confint

    n, yes = len(values), int(sum(values))
    if n == 0:
        return Proportion(method, 0, 0, (math.nan, math.nan))
    low, high = proportion_confint(yes, n, alpha=0.05, method="wilson")
    return Proportion(method, n, yes, (float(low), float(high)))


def build_report(store: KeyedStudy) -> StudyReport:
    started = time.perf_counter()
    rows = long_rows(store)
    questions = store.questions()
    methods, readers = store.methods(), store.readers()
    done, seconds = completion(store)
    report = StudyReport(store.folder, store.cases(), methods, readers, questions, rows, done, seconds)
    report.n_comments = sum(1 for r in rows if r.question == "comment" and str(r.score).strip())

    for q in questions:
        mine = [r for r in rows if r.question == q.id]
        if q.kind == "likert":
            _likert(report, q, mine)
        elif q.kind == "yesno":
            report.yesno[q.id] = [yes_fraction(m, [int(r.score) for r in mine if r.method == m]) for m in methods]
    report.seconds_to_compute = time.perf_counter() - started
    return report


def _likert(report: StudyReport, q: Question, rows: list[LongRow]) -> None:
    methods = report.methods
    stats_rows = []
    for m in methods:
        by_reader: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            if r.method == m:
                by_reader[r.reader].append(float(r.score))
        values = [v for vs in by_reader.values() for v in vs]
        stats_rows.append(method_stats(m, values, {k: float(np.mean(v)) for k, v in by_reader.items()}))
    report.likert[q.id] = stats_rows

    # Agreement: readers with at least one score on this question.
    score = {(r.reader, r.case, r.method): int(r.score) for r in rows}
    active = [reader for reader in report.readers if any(k[0] == reader for k in score)]
    images = sorted({(c, m) for _, c, m in score})
    report.fleiss_readers[q.id] = active
    if len(active) >= 2:
        shared = [im for im in images if all((reader, *im) in score for reader in active)]
        matrix = np.array([[score[(reader, *im)] for reader in active] for im in shared], int).reshape(len(shared), len(active))
        report.fleiss[q.id] = fleiss_kappa_of(matrix)
        pairs = []
        for a, b in itertools.combinations(active, 2):
            both = [im for im in images if (a, *im) in score and (b, *im) in score]
            pairs.append(PairKappa(a, b, weighted_cohen_kappa([score[(a, *im)] for im in both],
                                                              [score[(b, *im)] for im in both], q.scale)))
        report.cohen[q.id] = pairs
    else:
        why = "no reader has scored yet" if not active else f"only one reader ({active[0]}) has scored so far"
        report.fleiss[q.id] = Kappa(None, 0, f"needs two or more readers; {why}")

    # Paired comparisons on per-case means over readers.
    per_case: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (_, case, method), v in score.items():
        per_case[(case, method)].append(v)
    case_means = {k: float(np.mean(v)) for k, v in per_case.items()}
    if len(methods) < 2:
        report.paired_message[q.id] = "one method only: nothing to compare"
        return
    comparisons = []
    for a, b in itertools.combinations(methods, 2):
        cases = [c for c in report.cases if (c, a) in case_means and (c, b) in case_means]
        comparisons.append(paired_comparison(a, b, np.array([case_means[(c, a)] for c in cases]),
                                             np.array([case_means[(c, b)] for c in cases])))
    for name in ("wilcoxon_p", "ttest_p"):
        for c, p in zip(comparisons, bonferroni([getattr(c, name) for c in comparisons])):
            setattr(c, name + "_adjusted", p)
    report.paired[q.id] = comparisons


