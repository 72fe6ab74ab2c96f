"""Reader studies: blinded scoring of reconstructions by radiologists, and its statistics.

``diffrecon study create`` builds a study folder from reconstructions (:mod:`.design`),
readers score it in the viewer's reader mode (:mod:`.session` is the Qt-free model of a
reading session; ``diffrecon.viewer.reader_study`` draws it), every answer is committed
to the study's SQLite database as it is given (:mod:`.store`), and ``diffrecon study
report`` computes means, CIs, kappas and paired tests (:mod:`.statistics`) and writes
them out (:mod:`.report`).

A study folder holds ``study.json`` (settings, for people), ``study.sqlite`` (cases,
methods, readers, their orders, answers and answer history) and ``images/`` (blinded
copies named by opaque ids; only the database knows which method each one shows).
"""

from .design import (DEFAULT_QUESTIONS, QUESTIONS, CreatedStudy, StudyDesignError, create_study, discover_cases,
                     ensure_reader, reading_order_for)
from .images import read_image
from .report import write_report
from .statistics import StudyReport, build_report
from .session import ReadingSession
from .store import DB_NAME, Answer, Item, Question, StudyStore, StudyStoreError, open_store

__all__ = [
    "DB_NAME",
    "DEFAULT_QUESTIONS",
    "QUESTIONS",
    "Answer",
    "CreatedStudy",
    "Item",
    "Question",
    "ReadingSession",
    "StudyDesignError",
    "StudyReport",
    "StudyStore",
    "StudyStoreError",
    "build_report",
    "create_study",
    "discover_cases",
    "ensure_reader",
    "open_store",
    "read_image",
    "reading_order_for",
    "write_report",
]
