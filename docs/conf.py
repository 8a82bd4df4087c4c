"""Sphinx configuration of the sksnapshot documentation.

Build (from the repository root)::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

Environment switches:

``SKSNAPSHOT_GALLERY=0``
    Do not run the examples (sphinx-gallery's ``plot_gallery = False``): a
    quick build that still renders their code and text.
``SKSNAPSHOT_DOCS_OFFLINE=1``
    No intersphinx links to other projects' docs, so nothing is fetched from
    the network. ``SKSNAPSHOT_DOCS_OFFLINE=0`` always fetches them (an
    unreachable inventory is then a warning, an error under ``-W``). Unset:
    fetch them only when docs.python.org can be reached.
"""

import os
import re
import sys
from pathlib import Path

from sphinx_gallery.sorting import ExplicitOrder

HERE = Path(__file__).resolve().parent
# Document the sksnapshot of this checkout, also when it is not installed.
sys.path.insert(0, str(HERE.parent))

import sksnapshot  # noqa: E402

# Examples and plot directives draw off-screen.
os.environ.setdefault("MPLBACKEND", "Agg")


def _flag(name, default):
    """A boolean environment switch: "0", "false", "no", "off" or "" are False."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


# -- Project -------------------------------------------------------------------
project = "sksnapshot"
author = "sksnapshot developers"
copyright = "sksnapshot developers"  # noqa: A001
release = sksnapshot.__version__
version = ".".join(release.split(".")[:2])

# -- General -------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
    "sphinx_gallery.gen_gallery",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
default_role = "literal"

# -- autodoc / autosummary / numpydoc ------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# -- intersphinx -------------------------------------------------------------------
def _online(host="docs.python.org", port=443, timeout=3.0):
    """Whether a connection to ``host`` opens: a cheap test for a network."""
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


if os.environ.get("SKSNAPSHOT_DOCS_OFFLINE") is not None:
    OFFLINE = _flag("SKSNAPSHOT_DOCS_OFFLINE", False)
else:
    OFFLINE = not _online()
    if OFFLINE:
        print("sksnapshot docs: no network, building without intersphinx links "
              "(SKSNAPSHOT_DOCS_OFFLINE=0 forces them).")
if OFFLINE:
    intersphinx_mapping = {}
else:
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "sklearn": ("https://scikit-learn.org/stable/", None),
        "skorch": ("https://skorch.readthedocs.io/en/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
        "matplotlib": ("https://matplotlib.org/stable/", None),
    }
intersphinx_timeout = 10

# -- matplotlib's plot directive (figures in the user guide) --------------------------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_rcparams = {"figure.figsize": (7, 3.2), "figure.autolayout": True}
plot_apply_rcparams = True

# -- sphinx-gallery ------------------------------------------------------------------
RUN_GALLERY = _flag("SKSNAPSHOT_GALLERY", True)
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "plot_gallery": RUN_GALLERY,
    "within_subsection_order": ExplicitOrder([
        "plot_quickstart.py",
        "plot_lr_schedule.py",
        "plot_staged_scores.py",
        "plot_reliability.py",
        "plot_disagreement.py",
        "plot_weight_averaging.py",
        "plot_grid_search.py",
        "*",
    ]),
    "doc_module": ("sksnapshot",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"sksnapshot": None},
    "image_scrapers": ("matplotlib",),
    "remove_config_comments": True,
    "write_computation_times": False,
    "show_memory": False,
    "min_reported_time": 1,
    "abort_on_example_error": True,
}

# -- HTML -------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sksnapshot {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path = []
html_show_sourcelink = False


# -- Keep the API page complete ------------------------------------------------------
def _check_api_page(app):
    """Warn (an error under -W) when an API page misses a public name of its module."""
    from sphinx.util import logging

    import sksnapshot.calibration
    import sksnapshot.metrics
    import sksnapshot.plotting
    import sksnapshot.schedules
    import sksnapshot.selection

    pages = {sksnapshot: "api.rst", sksnapshot.schedules: "api_schedules.rst",
             sksnapshot.selection: "api_selection.rst", sksnapshot.metrics: "api_metrics.rst",
             sksnapshot.plotting: "api_plotting.rst",
             sksnapshot.calibration: "api_calibration.rst"}
    for module, page in pages.items():
        listed = set(re.findall(r"^   ([A-Za-z_][A-Za-z0-9_]*)\s*$",
                                (HERE / page).read_text(), flags=re.MULTILINE))
        missing = sorted(set(module.__all__) - listed)
        if missing:
            logging.getLogger(__name__).warning(
                "docs/%s does not list %s from %s.__all__", page, ", ".join(missing),
                module.__name__)


# -- Docstring fixes ---------------------------------------------------------------
_SHAPE_NAME = re.compile(r"(?<![`\w])([A-Za-z]\w*_)(?=[,)])")


def _quote_shape_names(app, what, name, obj, options, lines):
    """Quote fitted-attribute names in shapes: ``(n_features_in_,)``.

    A bare ``n_features_in_`` is a reStructuredText link to an undefined target.
    Runs before numpydoc, which leaves the type text of parameters as it is.
    """
    for i, line in enumerate(lines):
        if "shape (" in line:
            lines[i] = _SHAPE_NAME.sub(r"``\1``", line)


def _skip_metadata_request_methods(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated ``set_*_request`` methods.

    Their docstrings only link into scikit-learn's user guide, and every
    scikit-learn estimator has them.
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("builder-inited", _check_api_page)
    app.connect("autodoc-process-docstring", _quote_shape_names, priority=400)
    app.connect("autodoc-skip-member", _skip_metadata_request_methods)
