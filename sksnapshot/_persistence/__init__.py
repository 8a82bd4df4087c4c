"""Saving a fitted ensemble without pickle: safetensors weights + JSON metadata.

``joblib.dump``/``pickle`` keep working, but unpickling a file can run any code
it carries, so such files must come from a trusted source. The format here
cannot: tensors are read by safetensors, everything else is JSON, and the module
is rebuilt only from classes the caller allows, never by importing a name that
the file spells out.

A file from someone else can still be wrong (edited by hand, truncated, or made
to hurt): :func:`load_ensemble` checks the whole of it against the format
before it builds anything, and refuses it with one :class:`InvalidEnsembleFile`
naming the file and the field.

The rooms: ``_format`` (constants, the error), ``_writer`` (save_ensemble),
``_reading`` (each file opened once, checked on its descriptor, read capped),
``_checks`` (the JSON checker), ``_fields`` (the table of fitted fields),
``_metadata`` (the file's other parts), ``_estimators`` (what the estimators
state about themselves), ``_builtin`` (what is known of the library's own
modules), ``_probe`` (the module on the meta device and on probes),
``_assembly`` and ``_loading`` (load_ensemble). See ARCHITECTURE.md.
"""

from ._format import (
    FORMAT_VERSION,
    METADATA_MAX_BYTES,
    METADATA_MAX_CONTAINERS,
    METADATA_MAX_DEPTH,
    InvalidEnsembleFile,
)
from ._loading import load_ensemble
from ._writer import save_ensemble

__all__ = ["InvalidEnsembleFile", "save_ensemble", "load_ensemble", "FORMAT_VERSION",
           "METADATA_MAX_BYTES", "METADATA_MAX_CONTAINERS", "METADATA_MAX_DEPTH"]
