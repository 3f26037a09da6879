"""Sphinx configuration of the tinyspp site (built by ``make docs``; see docs/make_site.py).

Sphinx + MyST (Markdown pages) + myst-nb (notebooks, rendered from their stored outputs) +
autodoc/autosummary + numpydoc (the API reference) + the PyData theme: the tool chain of NumPy,
SciPy and scikit-image. Offline: no intersphinx, MathJax served from ``_static``.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(DOCS), str(DOCS / "api")]

import apigen  # noqa: E402
import make_site  # noqa: E402
import numpydoc.xref  # noqa: E402
import site_ext  # noqa: E402

import tinyspp  # noqa: E402

project = "tinyspp"
author = "the tinyspp authors"
copyright = "the tinyspp authors (MIT licence)"
release = version = tinyspp.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_codeautolink",  # names in code cells and examples link to their API pages
    "site_ext",  # docs/site_ext.py: generated sources, link rewriting, reference resolution
]

# --- sources --------------------------------------------------------------------------------
# docs/notebooks/ is a copy of ../notebooks/*.ipynb (site_ext.sync_notebooks), git-ignored; the
# guide's index docs/guide/index.md lists docs/*.md (site_ext.GUIDE_ORDER).
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
root_doc = "index"

# --- notebooks: never executed, rendered from what is stored -------------------------------
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "attrs_inline"]
myst_dmath_double_inline = True  # $$...$$ right under a line of text: display maths, as in Jupyter
myst_heading_anchors = 3
myst_url_schemes = ["http", "https", "mailto"]

# --- maths: MathJax 3 from the npm registry, vendored into _static by make_site -----------
html_static_path = ["_static", str(make_site.vendor_mathjax())]
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {"options": {"enableMenu": True}}

# --- API reference ---------------------------------------------------------------------------
def _code_of_pages() -> dict[str, list[str]]:
    """Code cells of the notebooks and code blocks of the guide pages, by site page."""
    code = {f"notebooks/{p.stem}": apigen.notebook_code(p)
            for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    code |= {p.stem: apigen.markdown_code(p) for p in sorted(DOCS.glob("*.md"))
             if p.stem != "index"}
    return code


API = site_ext.API = apigen.write_pages(DOCS / "api" / "generated", _code_of_pages())
autosummary_generate = False  # apigen writes every page itself
autodoc_typehints = "none"  # types are in the numpydoc sections
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True  # signatures show defaults as written (np.float32, DEFAULT_LEVELS)
autodoc_default_options = {"exclude-members": "__init__, __new__"}
add_module_names = False
python_display_short_literal_types = True

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False
numpydoc_xref_param_type = True
# Only the words below become links in parameter types; "ndarray of shape (N, C, H, W)",
# "int, optional", "{'max', 'avg'}" and the like stay plain text (no intersphinx offline).
# numpydoc's own aliases point into Python's and NumPy's inventories: mapped to themselves, they
# stay plain words.
numpydoc_xref_ignore = "all"
numpydoc_xref_aliases = {word: word for word in numpydoc.xref.DEFAULT_LINKS}
numpydoc_xref_aliases |= apigen.xref_aliases(API.modules)

# code: `from tinyspp import spp_forward` names the object documented as tinyspp.ops.spp_forward
codeautolink_concat_default = True  # a notebook's cells are one program (imports carry over)
codeautolink_inventory_map = API.aliases

# --- strictness: -W -n (make_site), with the few targets that cannot resolve offline --------
nitpicky = True
# A reference the Python domain cannot resolve is looked up once more by site_ext: as an alias of
# a documented object, as the name Python would see in the docstring's module, or as an outside
# name (the standard library, NumPy...: shown as code without a link, since no inventory is
# downloaded). Anything else -- a typo, a private name -- fails the build.


# --- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = "tinyspp"
html_css_files = ["tinyspp.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "collapse_navigation": True,  # the sidebar expands the current section only (faster, shorter)
    "navigation_depth": 3,
    "header_links_before_dropdown": 6,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "auto"}  # unset, the theme logs a console error on a first visit
html_favicon = "_static/favicon.svg"
html_sidebars = {"index": []}
html_show_sourcelink = False
html_copy_source = False
