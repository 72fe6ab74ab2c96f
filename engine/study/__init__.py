"""Reader studies: blinded scoring of reconstructions by radiologists, and its statistics.

``diffrecon study create`` builds a study folder from reconstructions (:mod:`.design`),
readers score it in the viewer's reader mode (:mod:`.session` is the Qt-free model of a
reading session; ``diffrecon.viewer.reader_study`` draws it), every answer is committed
to the study's SQLite database as it is given (:mod:`.store`), and ``diffrecon study
report`` computes means, CIs, kappas and paired tests (:mod:`.statistics`) and writes
them out (:mod:`.report`).

A study folder holds ``study.json`` (questions and readers, for people), ``study.sqlite``
(image ids, readers, their orders, answers and answer history) and ``images/`` (blinded
copies named by random ids): what readers receive, naming no method. Which image shows
which method is in the key file written beside the folder (``STUDY.key.json``,
:mod:`.key`), which the owner keeps and ``study report`` reads.
"""

from .design import (DEFAULT_QUESTIONS, QUESTIONS, CreatedStudy, StudyDesignError, create_study, discover_cases,
                     ensure_reader, reading_order_for)
from .images import read_image
from .key import KeyedStudy, StudyKey, default_key_path, open_keyed, read_key
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
    "KeyedStudy",
    "StudyKey",
    "default_key_path",
    "open_keyed",
    "read_key",
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
