"""The files and text that report a reader study's statistics (:mod:`.statistics`).

Outputs: a plain-text summary, ``report.md``, ``scores_long.csv`` (one row per answer:
reader, case, method, question, score, seconds: the long format iMRMC-style tools
read) and ``scores_by_method.png`` (matplotlib's Agg backend: no display needed).
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .statistics import LongRow, StudyReport, build_report
from .key import KeyedStudy
from .store import Question

CSV_COLUMNS = ("reader", "case", "method", "question", "score", "seconds")
REPORT_SUFFIX = ".report"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def readers_table(done: dict[str, tuple[int, int]], seconds: dict[str, float]) -> Table:
    rows = []
    for reader, (scored, total) in done.items():
        rows.append([reader, str(scored), str(total), f"{100 * scored / total:.0f} %" if total else "—",
                     f"{seconds.get(reader, 0.0) / 60:.1f}"])
    return Table("Readers", ["reader", "scored", "of", "done", "minutes reading"], rows,
                 [] if rows else ["No readers yet: add them with `diffrecon study read STUDY --reader NAME`."])


# ----- statistics -----


# ----- presenting it -----

def count(n: int, noun: str) -> str:
    """ "1 reader", "3 readers": a count with its noun in the right number."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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
                     f"{fleiss.n_items} images scored by all {count(len(readers), 'reader')}."]
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
    n_pairs = len(report.paired[q.id])
    notes.insert(0, f"On per-case means over readers; difference = first − second; Bonferroni-adjusted over "
                    f"{n_pairs} pair{'s' if n_pairs != 1 else ''}.")
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
             f"({', '.join(report.methods)}), {count(len(report.readers), 'reader')}, "
             f"{count(len(report.rows), 'answer')}"]
    for t in tables(report):
        lines += ["", *text_table(t)]
    return "\n".join(lines)


def render_markdown(report: StudyReport, files: list[Path]) -> str:
    lines = [f"# Reader study report: {report.study.name}", "",
             f"{len(report.cases)} cases × {len(report.methods)} methods ({', '.join(report.methods)}), "
             f"{count(len(report.readers), 'reader')}, {count(len(report.rows), 'answer')}. Questions: "
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
        n_readers = len(report.fleiss_readers.get(q.id, readers))
        ax.set_title(f"{q.prompt}: mean with 95 % CI ({count(n_readers, 'reader')}, "
                     f"{count(len(report.cases), 'case')})", fontsize=11)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    fig.savefig(path, format="png")
    return path


def default_report_dir(study: str | Path) -> Path:
    """``my-study.report`` beside the study folder: the report names methods, so it stays out
    of the folder that readers receive."""
    study = Path(study)
    return study.parent / f"{study.resolve().name}{REPORT_SUFFIX}"


def write_report(store: KeyedStudy, out_dir: str | Path | None = None) -> tuple[StudyReport, list[Path]]:
    """Compute the report and write report.md, scores_long.csv and scores_by_method.png."""
    report = build_report(store)
    out = Path(out_dir) if out_dir is not None else default_report_dir(store.folder)
    out.mkdir(parents=True, exist_ok=True)
    files = [write_csv(report.rows, out / "scores_long.csv")]
    chart = write_chart(report, out / "scores_by_method.png")
    if chart is not None:
        files.append(chart)
    md = out / "report.md"
    md.write_text(render_markdown(report, files), encoding="utf-8")
    return report, [md, *files]

