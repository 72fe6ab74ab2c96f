"""The diffrecon desktop viewer (PySide6 + pyqtgraph). Imports the engine, never the reverse."""
