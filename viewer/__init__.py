"""The diffrecon desktop viewer (PySide6 + pyqtgraph). Imports the engine, never the reverse.

Start it with ``diffrecon view [PATH]`` (:mod:`.app`). Layout, models first:

* Qt-free models: :mod:`.session` (the open scan and its result layers), :mod:`.geometry`
  (affine -> edge letters, millimetres), :mod:`.windowing` (window/level, presets from
  ``resources/presets/window_level.json``), :mod:`.engine_jobs` (the engine work as
  generators), :mod:`.export` (volumes and metrics to files), :mod:`.paths`.
* Qt: :mod:`.workers` (job threads), :mod:`.run_controller` (inputs, baseline, streamed
  diffusion), :mod:`.pane` / :mod:`.pane_grid` / :mod:`.colorbar` / :mod:`.display` (the four
  linked panes), :mod:`.controls`, :mod:`.metrics_table`, :mod:`.window` and
  :mod:`.window_actions` (menus, exports), :mod:`.responsiveness` (stall meter).
* Reader studies (``diffrecon study read``): :mod:`.reader_study` (the blinded reading window,
  drawing ``diffrecon.study.ReadingSession``) and :mod:`.reader_panel` (scoring panel, end page).
"""
