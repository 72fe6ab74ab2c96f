"""Reading and writing volumes: DICOM, NIfTI, fastMRI-style HDF5, NumPy.

``load_volume(path)`` picks the reader from what the path is (a folder is a DICOM
series; otherwise the file's extension and magic bytes decide); ``save_volume``
picks the writer from the output's extension. Both raise
:class:`diffrecon.errors.VolumeReadError` / ``VolumeWriteError`` with a one-sentence
reason for anything wrong with the file.
"""

from .volume import KSpace, Volume, affine_from_spacing, axis_codes
from .loader import detect_format, load_volume, save_volume

__all__ = [
    "KSpace",
    "Volume",
    "affine_from_spacing",
    "axis_codes",
    "detect_format",
    "load_volume",
    "save_volume",
]
