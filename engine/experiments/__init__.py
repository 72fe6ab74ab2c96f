"""Developer measurements, run as ``python -m diffrecon.experiments.<name>`` (never part of the tests).

Not the product's ``diffrecon bench`` (:mod:`diffrecon.bench`): these scripts time
components (:mod:`.operators`, :mod:`.diffusion`) and sweep diffusion settings on
validation slices (``diffusion --quality``) to choose defaults.
"""
