"""Exported programs: the neutral ground between training and everything that uses a model.

``train`` and ``export`` write what is here; ``predict``, ``embed`` and ``retrieve`` read it.
Nothing in this package imports ``rectool.train`` or ``rectool.retrieval``.

Modules
    ``inputs``    Arrow columns -> model input tensors (``InputSpec``, ``to_tensors``): the one
                  conversion shared by training and every reader of an export.
    ``manifest``  ``ExportManifest``: the typed, versioned contract an export's ``_meta.json``
                  carries (parts, their columns, output kinds, candidate shape, repeat bonus).
    ``load``      ``load_program``: one ``NAME.pt2`` and its input spec.
    ``device``    where a program runs (``DeviceChoice``, defined here so that option parsing stays
                  free of torch).
"""

from typing import Literal

DeviceChoice = Literal["auto", "cpu", "cuda"]
