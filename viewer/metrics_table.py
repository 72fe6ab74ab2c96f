"""The small metrics table: PSNR, SSIM, NMSE of each pane against the reference.

Scores are the engine's (fastMRI conventions, working domain, over the run's slices),
so they match ``diffrecon reconstruct --report``. Without a reference the table says so.
"""

from __future__ import annotations

import math

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

ROWS = (("input", "Input"), ("diffusion", "Diffusion"), ("baseline", "Baseline"))
COLUMNS = (("psnr", "PSNR dB", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("nmse", "NMSE", "{:.4f}"))


def format_metric(key: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if math.isinf(value):
        return "inf"
    return dict((k, f) for k, _, f in COLUMNS)[key].format(value)


class MetricsTable(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.caption = QLabel("No reference: metrics need a ground truth (simulate).")
        self.caption.setWordWrap(True)
        self.table = QTableWidget(len(ROWS), len(COLUMNS))
        self.table.setHorizontalHeaderLabels([label for _, label, _ in COLUMNS])
        self.table.setVerticalHeaderLabels([label for _, label in ROWS])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._fit_height()
        layout.addWidget(self.caption)
        layout.addWidget(self.table)
        self.values: dict[str, dict[str, float]] = {}

    def _fit_height(self) -> None:
        """Exactly the header and the three rows: a guessed row height left an empty fourth row."""
        self.table.resizeRowsToContents()
        header = self.table.horizontalHeader()
        height = max(header.height(), header.sizeHint().height())
        rows = sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        self.table.setFixedHeight(height + rows + 2 * self.table.frameWidth())

    def showEvent(self, ev):
        super().showEvent(ev)
        self._fit_height()  # the style's real row and header heights are known once shown

    def show_metrics(self, metrics: dict[str, dict[str, float]], caption: str) -> None:
        self.values = {k: dict(v) for k, v in metrics.items()}
        self.caption.setText(caption)
        for r, (row_key, _) in enumerate(ROWS):
            for c, (col_key, _, _) in enumerate(COLUMNS):
                value = metrics.get(row_key, {}).get(col_key)
                item = QTableWidgetItem(format_metric(col_key, value))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        self._fit_height()

    def cell_text(self, row_key: str, col_key: str) -> str:
        r = [k for k, _ in ROWS].index(row_key)
        c = [k for k, _, _ in COLUMNS].index(col_key)
        item = self.table.item(r, c)
        return "" if item is None else item.text()
