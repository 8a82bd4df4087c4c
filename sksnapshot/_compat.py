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

#: The scikit-learn versions these names are known to work with: from the
#: declared minimum (``scikit-learn>=1.6`` in pyproject.toml) to the newest
#: release the test suite has run on (1.9.1). ``tests/test_compat.py`` fails on
#: a version outside it, to have the suite run there before this is widened.
SKLEARN_VERSIONS = ("1.6", "1.9")

__all__ = ["Interval", "InvalidParameterError", "SKLEARN_VERSIONS", "StrOptions",
           "_fit_context", "validate_params"]
