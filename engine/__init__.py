"""diffrecon: reconstruct and denoise medical images with diffusion models.

This package is the headless engine (torch, numpy). It never imports Qt; the
desktop viewer lives in ``diffrecon.viewer`` (folder ``viewer/``).
"""

__version__ = "0.1.0"
