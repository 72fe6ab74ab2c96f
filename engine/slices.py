"""``--slices`` text, Python style, for every command that takes it (reconstruct, bench, study create).

``"40:60"`` -> ``slice(40, 60)``; ``"0:100:5"`` -> ``slice(0, 100, 5)``; ``"7"`` -> ``[7]``;
``"3,9,12"`` -> ``[3, 9, 12]``; empty -> None (the whole volume). Negative indices count from
the end, as in Python. :func:`parse_slices` checks the syntax; :func:`slice_indices`
resolves a selection against a volume's slice count.
"""

from __future__ import annotations

import numpy as np

from .errors import SettingsError


def parse_slices(text: str | None) -> slice | list[int] | None:
    """The selection ``text`` names, or a one-sentence :class:`SettingsError`."""
    if not text or not text.strip():
        return None
    try:
        if "," in text:
            return [int(t) for t in text.split(",") if t.strip()]
        parts = [int(p) if p.strip() else None for p in text.split(":")]
    except ValueError:
        raise SettingsError(f"--slices must look like 40:60, 12 or 3,9,12, not {text!r}") from None
    if len(parts) == 1:
        return [parts[0]] if parts[0] is not None else None
    if len(parts) > 3:
        raise SettingsError(f"--slices must look like 40:60, 12 or 3,9,12, not {text!r}")
    if parts[2:] == [0]:
        raise SettingsError(f"--slices {text}: the step cannot be zero")
    return slice(*parts)


def slice_indices(text: str | None, n: int, what: str = "the volume's") -> np.ndarray:
    """The slice indices ``text`` selects of ``n`` slices (all of them when empty), checked:
    an index outside the volume or a range that selects nothing is a one-sentence error, and
    a slice named twice is kept once (in the order first named)."""
    selection = parse_slices(text)
    if selection is None:
        return np.arange(n)
    if isinstance(selection, list):
        bad = [i for i in selection if not -n <= i < n]
        if bad:
            raise SettingsError(f"slice {bad[0]} is outside {what} {n} slices (--slices {text})")
        # a slice named twice (3,3 or 9,-1 of 10) is one slice: two copies would share one position
        return np.asarray(list(dict.fromkeys(i % n for i in selection)), dtype=np.int64)
    chosen = np.arange(n)[selection]
    if chosen.size == 0:
        raise SettingsError(f"--slices {text} selects none of {what} {n} slices")
    return chosen
