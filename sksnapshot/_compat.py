"""scikit-learn's private APIs, imported in this one place.

The package uses a few names scikit-learn does not promise to keep:
``sklearn.base._fit_context`` (parameter validation around ``fit``) and
``sklearn.utils._param_validation`` (the constraint objects of
``_parameter_constraints``, ``validate_params``, ``InvalidParameterError``).
Every module imports them from here, so a scikit-learn release that moves
them is one file to change.
"""

from sklearn.base import _fit_context
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_params,
)

#: The scikit-learn versions these names are known to work with: CI tests both
#: ends, the declared minimum (``scikit-learn>=1.6`` in pyproject.toml, 1.6.0
#: pinned in ``.ci/oldest.txt``) and the newest release pip resolves (1.9.1).
#: ``tests/test_persistence_reading.py`` fails on a version outside it, to have
#: the suite run there before this is widened.
SKLEARN_VERSIONS = ("1.6", "1.9")

__all__ = ["Interval", "InvalidParameterError", "SKLEARN_VERSIONS", "StrOptions",
           "_fit_context", "validate_params"]
