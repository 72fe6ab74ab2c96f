"""The statistics of a reader study and the files that report them.

What is computed (every test and coefficient comes from a maintained library):

* per method and Likert question: n, mean, SD and a t-based 95 % CI (scipy.stats);
* agreement: Fleiss' kappa across readers over the images every reader scored
  (statsmodels' ``aggregate_raters`` + ``fleiss_kappa``), and the linearly weighted
  Cohen's kappa of each reader pair (scikit-learn's ``cohen_kappa_score``);
* paired comparisons of each method pair on per-case means over readers: mean
  difference, Wilcoxon signed-rank and paired t-test p values (scipy.stats), both
  Bonferroni-corrected over the pairs (statsmodels' ``multipletests``);
* yes/no questions: the fraction "yes" per method with a Wilson 95 % CI (statsmodels);
* per-reader completion.

Outputs: a plain-text summary, ``report.md``, ``scores_long.csv`` (one row per answer:
reader, case, method, question, score, seconds: the long format iMRMC-style tools
read) and ``scores_by_method.png`` (matplotlib's Agg backend: no display needed).
Degenerate studies (no scores, one reader, identical scores) get a sentence, never a
crash.
"""

from __future__ import annotations

import csv
import itertools
import math
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .store import Question, StudyStore

CSV_COLUMNS = ("reader", "case", "method", "question", "score", "seconds")
REPORT_DIR = "report"


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
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


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

def long_rows(store: StudyStore) -> list[LongRow]:
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


def completion(store: StudyStore) -> tuple[dict[str, tuple[int, int]], dict[str, float]]:
    """Per reader: (images with every required question answered, images), and seconds spent reading."""
    items = [i.id for i in store.items()]
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


def readers_table(done: dict[str, tuple[int, int]], seconds: dict[str, float]) -> Table:
    rows = []
    for reader, (scored, total) in done.items():
        rows.append([reader, str(scored), str(total), f"{100 * scored / total:.0f} %" if total else "—",
                     f"{seconds.get(reader, 0.0) / 60:.1f}"])
    return Table("Readers", ["reader", "scored", "of", "done", "minutes reading"], rows,
                 [] if rows else ["No readers yet: add them with `diffrecon study read STUDY --reader NAME`."])


# ----- statistics -----

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


def build_report(store: StudyStore) -> StudyReport:
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


# ----- presenting it -----

def _num(x: float, digits: int = 2) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _ci(ci: tuple[float, float]) -> str:
    return "—" if not all(math.isfinite(v) for v in ci) else f"{ci[0]:.2f}–{ci[1]:.2f}"


def _p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def kappa_words(value: float) -> str:
    """Landis & Koch's (1977) names for kappa bands, as reader-study papers quote them."""
    for upper, words in ((0.0, "poor"), (0.20, "slight"), (0.40, "fair"), (0.60, "moderate"),
                         (0.80, "substantial"), (1.01, "almost perfect")):
        if value <= upper:
            return words
    return "almost perfect"


def tables(report: StudyReport) -> list[Table]:
    out: list[Table] = [readers_table(report.completion, report.reading_seconds)]
    if not report.has_scores:
        out.append(Table("Scores", [], [], ["No scores yet: nothing to summarise."]))
        return out
    for q in report.questions:
        if q.kind == "likert":
            out += _likert_tables(report, q)
        elif q.kind == "yesno":
            rows = [[p.method, str(p.n), str(p.yes), _num(p.fraction), _ci(p.ci)]
                    for p in report.yesno[q.id]]
            out.append(Table(f"{q.prompt} (fraction answering yes)",
                             ["method", "n", "yes", "fraction", "95 % CI (Wilson)"], rows))
    if report.n_comments:
        out.append(Table("Comments", [], [], [f"{report.n_comments} free-text comments: see scores_long.csv "
                                              f"(question = comment)."]))
    return out


def _likert_tables(report: StudyReport, q: Question) -> list[Table]:
    scale = f"{q.scale[0]}–{q.scale[-1]}"
    rows = [[s.method, str(s.n), _num(s.mean), _num(s.sd), _ci(s.ci)]
            for s in report.likert[q.id]]
    result = [Table(f"{q.prompt} ({scale}), per method", ["method", "n", "mean", "SD", "95 % CI"], rows,
                    [f"n counts reader x case scores; {scale} anchors: "
                     + "; ".join(f"{k} {v.split(':')[0].lower()}" for k, v in sorted(q.anchors.items()))])]
    fleiss = report.fleiss[q.id]
    readers = report.fleiss_readers.get(q.id, [])
    if fleiss.value is None:
        agreement = [f"Fleiss' kappa: {fleiss.message}."]
    else:
        agreement = [f"Fleiss' kappa = {fleiss.value:.3f} ({kappa_words(fleiss.value)} agreement) over the "
                     f"{fleiss.n_items} images scored by all {len(readers)} readers."]
    pair_rows = []
    for pk in report.cohen.get(q.id, []):
        k = pk.kappa
        pair_rows.append([f"{pk.reader_a} – {pk.reader_b}", str(k.n_items),
                          f"{k.value:.3f} ({kappa_words(k.value)})" if k.value is not None else k.message])
    result.append(Table(f"Agreement between readers ({q.id})", ["reader pair", "images", "weighted Cohen's kappa (linear)"]
                        if pair_rows else [], pair_rows, agreement))
    if q.id in report.paired_message:
        result.append(Table(f"Paired comparisons ({q.id})", [], [], [report.paired_message[q.id] + "."]))
        return result
    comp_rows, notes = [], []
    for c in report.paired[q.id]:
        comp_rows.append([f"{c.method_a} vs {c.method_b}", str(c.n_cases), _num(c.mean_difference, 3),
                          _p(c.wilcoxon_p), _p(c.wilcoxon_p_adjusted), _p(c.ttest_p), _p(c.ttest_p_adjusted)])
        if c.message:
            notes.append(f"{c.method_a} vs {c.method_b}: {c.message}.")
    k = len(report.paired[q.id])
    notes.insert(0, f"On per-case means over readers; difference = first − second; Bonferroni-adjusted over "
                    f"{k} pair{'s' if k != 1 else ''}.")
    result.append(Table(f"Paired comparisons ({q.id})",
                        ["methods", "cases", "mean difference", "Wilcoxon p", "Bonferroni", "paired t p", "Bonferroni"],
                        comp_rows, notes))
    return result


def text_table(t: Table) -> list[str]:
    """A table as aligned plain-text lines: title, underline, header, rows, notes."""
    lines = [t.title, "-" * len(t.title)]
    if t.headers:
        widths = [max(len(h), *(len(r[i]) for r in t.rows)) if t.rows else len(h) for i, h in enumerate(t.headers)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(t.headers, widths)).rstrip())
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in t.rows]
    return lines + t.notes


def render_text(report: StudyReport) -> str:
    lines = [f"Reader study {report.study}: {len(report.cases)} cases x {len(report.methods)} methods "
             f"({', '.join(report.methods)}), {len(report.readers)} readers, {len(report.rows)} answers"]
    for t in tables(report):
        lines += ["", *text_table(t)]
    return "\n".join(lines)


def render_markdown(report: StudyReport, files: list[Path]) -> str:
    lines = [f"# Reader study report: {report.study.name}", "",
             f"{len(report.cases)} cases × {len(report.methods)} methods ({', '.join(report.methods)}), "
             f"{len(report.readers)} readers, {len(report.rows)} answers. Questions: "
             + "; ".join(f"{q.prompt} ({q.kind})" for q in report.questions) + "."]
    for t in tables(report):
        lines += ["", f"## {t.title}", ""]
        if t.headers:
            lines.append("| " + " | ".join(t.headers) + " |")
            lines.append("|" + "|".join("---" for _ in t.headers) + "|")
            lines += ["| " + " | ".join(r) + " |" for r in t.rows]
            if t.notes:
                lines.append("")
        lines += t.notes
    if files:
        lines += ["", "## Files", ""] + [f"- `{f.name}`" for f in files]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[LongRow], path: Path) -> Path:
    """One row per answer; yes/no answers as 1 (yes) / 0 (no), comments as their text."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([r.reader, r.case, r.method, r.question, r.score, f"{r.seconds:.1f}"])
    return path


def write_chart(report: StudyReport, path: Path) -> Path | None:
    """Mean per method with 95 % CI bars and each reader's mean as a dot, per Likert question."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [q for q in report.questions if q.kind == "likert" and any(s.n for s in report.likert.get(q.id, []))]
    if not panels:
        return None
    fig = Figure(figsize=(max(6.0, 1.6 * len(report.methods) + 3.5), 4.6 * len(panels)), dpi=120,
                 layout="constrained")
    FigureCanvasAgg(fig)
    readers = report.readers
    colors = {r: c for r, c in zip(readers, itertools.cycle(
        ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]))}
    for row, q in enumerate(panels, start=1):
        ax = fig.add_subplot(len(panels), 1, row)
        stats_rows = report.likert[q.id]
        x = np.arange(len(stats_rows))
        means = np.array([s.mean for s in stats_rows])
        low = np.array([s.mean - s.ci[0] if math.isfinite(s.ci[0]) else 0.0 for s in stats_rows])
        high = np.array([s.ci[1] - s.mean if math.isfinite(s.ci[1]) else 0.0 for s in stats_rows])
        ax.bar(x, np.nan_to_num(means), width=0.6, color="#9ecae1", edgecolor="#3182bd", zorder=2,
               label="mean of all scores")
        ax.errorbar(x, np.nan_to_num(means), yerr=[low, high], fmt="none", ecolor="#08306b", capsize=6,
                    linewidth=1.5, zorder=3, label="95 % CI")
        # Dots beside the CI bar, alternating left and right of it, never on it.
        spread = max(1, (len(readers) - 1) // 2)
        offsets = [(-1) ** k * (0.09 + 0.16 * (k // 2) / spread) for k in range(len(readers))]
        for offset, reader in zip(offsets, readers):
            xs = [i + offset for i, s in enumerate(stats_rows) if reader in s.reader_means]
            ys = [s.reader_means[reader] for s in stats_rows if reader in s.reader_means]
            if xs:
                ax.scatter(xs, ys, s=28, color=colors[reader], edgecolor="white", linewidth=0.6, zorder=4,
                           label=f"{reader} (reader's mean)")
        for i, s in enumerate(stats_rows):
            if s.n:
                ax.annotate(f"{s.mean:.2f}", (i, q.scale[-1] + 0.15), ha="center", fontsize=10, color="#08306b")
        ax.set_xticks(x, [f"{s.method}\n(n = {s.n})" for s in stats_rows])
        ax.set_ylim(0, q.scale[-1] + 0.5)
        ax.set_yticks(q.scale, [f"{v}  {q.anchors[str(v)].split(':')[0]}" for v in q.scale])
        ax.set_ylabel("score")
        ax.set_xlabel("method")
        ax.grid(axis="y", color="#dddddd", zorder=0)
        ax.set_axisbelow(True)
        ax.set_title(f"{q.prompt}: mean with 95 % CI ({len(report.fleiss_readers.get(q.id, readers))} readers, "
                     f"{len(report.cases)} cases)", fontsize=11)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    fig.savefig(path, format="png")
    return path


def write_report(store: StudyStore, out_dir: str | Path | None = None) -> tuple[StudyReport, list[Path]]:
    """Compute the report and write report.md, scores_long.csv and scores_by_method.png."""
    report = build_report(store)
    out = Path(out_dir) if out_dir is not None else store.folder / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    files = [write_csv(report.rows, out / "scores_long.csv")]
    chart = write_chart(report, out / "scores_by_method.png")
    if chart is not None:
        files.append(chart)
    md = out / "report.md"
    md.write_text(render_markdown(report, files), encoding="utf-8")
    return report, [md, *files]
