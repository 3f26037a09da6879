"""The site's own Sphinx extension (loaded by ``docs/conf.py``): what tinyspp's docs need beyond
configuration.

* Generated sources: ``docs/notebooks/`` (a copy of ``notebooks/*.ipynb``, so the site never
  re-executes them), ``docs/guide/index.md`` (the guide pages in reading order), both git-ignored.
* Links written for the repository (README.md, docs/*.md, the notebooks) rewritten for the site.
* References: a name a docstring uses resolves as Python would see it, outside names render
  unlinked (no inventory is downloaded offline), anything else fails the build (-W -n).
* Small repairs: autosummary's first-sentence check, numpydoc's dropped sections made warnings,
  ``tinyspp.x.y`` literals linked, NamedTuple fields described from their source comments.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import inspect
import posixpath
import re
import sys
import warnings
from pathlib import Path

import sphinx.ext.autosummary as autosummary
from docutils import nodes
from sphinx import addnodes
from sphinx.util import logging

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
API = None  # apigen.Api of the build: set by conf.py (site_ext.API = apigen.write_pages(...))

# --- the guide: docs/*.md, listed by docs/guide/index.md (generated, git-ignored) -----------
# In reading order; a page not named here still appears (after these), and a name whose page does
# not exist (yet) is skipped, so pages come and go without an edit here.
GUIDE_ORDER = ["architecture", "layers", "pyramid", "training", "results", "detection", "voc",
               "scale", "kernels", "performance", "testing", "exercises"]
GUIDE_INTRO = """# Guide

How each part of tinyspp works, what it was measured to do, and how it is tested: one page per
topic, each linking the notebooks that work through it and the API pages of the functions it uses.

"""


def guide_page(docs: Path = DOCS) -> str:
    pages = {p.stem for p in docs.glob("*.md")} - {"index"}
    ordered = [p for p in GUIDE_ORDER if p in pages] + sorted(pages - set(GUIDE_ORDER))
    body = "".join(f"/{p}\n" for p in ordered)
    return GUIDE_INTRO + f"```{{toctree}}\n:maxdepth: 2\n\n{body}```\n"


# --- notebooks: copied from ../notebooks into docs/notebooks (git-ignored) on every build ------
NOTEBOOKS_TOCTREE = """
```{toctree}
:maxdepth: 1
:glob:
:hidden:

[0-9]*
```
"""
NOTEBOOKS_INTRO = """# Notebooks

The learning path, in order. Each page is the notebook as committed, with the outputs of its last
full run (`TINYSPP_QUICK=0 python notebooks/run.py`): the site renders them and never re-executes
them. To run one yourself, open `notebooks/NN_name.ipynb` in Jupyter
(`pip install -e ".[notebooks]"`).

```{toctree}
:maxdepth: 1
:glob:

[0-9]*
```
"""


def _notebooks_index(src: Path) -> str:
    """notebooks/README.md (included) when there is one, else a short page; then the notebooks."""
    if (src / "README.md").is_file():
        return "```{include} ../../notebooks/README.md\n```\n" + NOTEBOOKS_TOCTREE
    return NOTEBOOKS_INTRO


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def sync_notebooks(src: Path = ROOT / "notebooks", dest: Path = DOCS / "notebooks") -> None:
    """Mirror ``src/*.ipynb`` and ``src/figures/`` into ``dest`` (unchanged files stay untouched,
    so Sphinx rebuilds only what changed) and write the notebooks' index page."""
    wanted = {p.relative_to(src): p for p in src.glob("*.ipynb")}
    wanted |= {p.relative_to(src): p for p in src.glob("figures/*") if p.is_file()}
    for rel, path in wanted.items():
        _write_if_changed(dest / rel, path.read_bytes())
    _write_if_changed(dest / "index.md", _notebooks_index(src).encode())
    for old in [*dest.glob("*.ipynb"), *dest.glob("figures/*")]:
        if old.relative_to(dest) not in wanted:
            old.unlink()


def write_guide_index() -> None:
    _write_if_changed(DOCS / "guide" / "index.md", guide_page().encode())



# --- links written for the repository, rewritten for the site --------------------------------
# README.md (included as the home page), docs/*.md and the notebooks link the way GitHub reads
# them: `docs/results.md`, `../notebooks/01_bin_math.ipynb`, `tinyspp/ops/spp.py`. On the site
# these become the pages: the copied notebook, the module's API page; any other file of the
# repository becomes a download. A link to nothing is left as it is, and fails the build.
_MD_LINK = re.compile(r"(\]\()([^)\s]+)(\))")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


# Folders of the repository that a site page stands for (a link to the folder opens the page).
FOLDER_PAGES = {"notebooks": "docs/notebooks/index.md", "exercises": "docs/exercises.md",
                "results": "docs/results.md"}


def _site_path(repo_path: str) -> str | None:
    """Where a repository path lives in the site's source tree (repository-relative)."""
    if repo_path == "README.md":
        return "docs/index.md"
    if repo_path == "notebooks/README.md":
        return "docs/notebooks/index.md"
    if repo_path in FOLDER_PAGES and (ROOT / repo_path).is_dir():
        page = FOLDER_PAGES[repo_path]
        if page.startswith("docs/notebooks/") or (ROOT / page).is_file():
            return page
    if repo_path.startswith("notebooks/") and (
            repo_path.endswith(".ipynb") or repo_path.startswith("notebooks/figures/")):
        return "docs/" + repo_path
    if repo_path == "tinyspp" or repo_path.startswith("tinyspp/"):
        module = repo_path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        if API.documented_name(sys.modules.get(module)):
            return f"docs/api/generated/{module}.rst"
    if repo_path.startswith("docs/") or (ROOT / repo_path).is_file():
        return repo_path
    return None


def site_link(target: str, src_dir: str, page_dir: str) -> str:
    """``target`` as written in a file of repository folder ``src_dir``, made relative to the
    site page in repository folder ``page_dir``."""
    if _SCHEME.match(target) or target.startswith(("#", "/")):
        return target
    path, hash_, anchor = target.partition("#")
    repo_path = posixpath.normpath(posixpath.join(src_dir, path)) if path else ""
    site = _site_path(repo_path) if repo_path and not repo_path.startswith("..") else None
    if site is None:
        return target
    return posixpath.relpath(site, page_dir) + hash_ + anchor


_HTML_IMG = re.compile(r"<img\s([^>]*?)/?>", re.IGNORECASE)
_HTML_ATTR = re.compile(r"""(\w+)\s*=\s*["']([^"']*)["']""")


def _markdown_image(match: re.Match) -> str:
    """``<img src="a.png" width="220">`` as a MyST image, which Sphinx copies into the site and
    checks (raw HTML would point at a file the site does not have)."""
    attrs = dict(_HTML_ATTR.findall(match[1]))
    if "src" not in attrs or _SCHEME.match(attrs["src"]):
        return match[0]
    size = "".join(f" {k}={attrs[k]}px" for k in ("width", "height") if attrs.get(k, "").isdigit())
    return f"![{attrs.get('alt', '')}]({attrs['src']})" + (f"{{{size.strip()}}}" if size else "")


def rewrite_links(text: str, src_dir: str, page_dir: str) -> str:
    text = _HTML_IMG.sub(_markdown_image, text)
    return _MD_LINK.sub(lambda m: m[1] + site_link(m[2], src_dir, page_dir) + m[3], text)


def _source_read(app, docname, source):
    if docname.startswith("api/"):
        return
    text = source[0]
    if docname.startswith("notebooks/"):
        text = rewrite_links(text, "notebooks", "docs/notebooks")
    else:
        text = rewrite_links(text, posixpath.dirname(f"docs/{docname}"), "docs")
    source[0] = text


def _include_read(app, relative_path, parent_docname, content):
    # (myst-parser passes the including file's stem as parent_docname: the path tells them apart)
    included = (DOCS / relative_path).resolve()
    if included == ROOT / "README.md":
        content[0] = rewrite_links(content[0], "", "docs")
    elif included == ROOT / "notebooks" / "README.md":
        content[0] = rewrite_links(content[0], "notebooks", "docs/notebooks")


def _resolve_in_module(modname: str | None, clsname: str | None, target: str) -> str | None:
    """The documented name of ``target`` as seen from ``modname`` (and class ``clsname``)."""
    module = sys.modules.get(modname or "")
    if module is None:
        return None
    head, _, rest = target.partition(".")
    scopes = [module]
    if clsname:
        owner = getattr(module, clsname.split(".")[0], None)
        scopes.insert(0, owner)
    for scope in scopes:
        if scope is None:
            continue
        if not hasattr(scope, head):
            if scope is not module and _sets_attribute(scope, head):
                return API.documented_name(scope)  # an instance attribute: the class's page
            continue
        name = API.documented_name(getattr(scope, head))
        if name:
            return f"{name}.{rest}" if rest else name
        if scope is not module:  # a member of the class: Class.member
            owner_name = API.documented_name(scope)
            if owner_name:
                return f"{owner_name}.{target}"
    return None


def _sets_attribute(cls, name: str) -> bool:
    """Whether the source of ``cls`` assigns ``self.<name>`` (an instance attribute)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return False
    return re.search(rf"\bself\.{re.escape(name)}\s*(:[^=]+)?=", source) is not None


def _defining_module(source: str | None) -> str | None:
    """The module whose source holds a docstring: autodoc names it in the node's ``source``,
    ``.../transforms.py:docstring of tinyspp.data.transforms.train_batch``."""
    _, sep, qualified = (source or "").partition(":docstring of ")
    parts = qualified.split(".") if sep else []
    while parts and ".".join(parts) not in sys.modules:
        parts.pop()
    return ".".join(parts) or None


def _parent(modname: str | None) -> str | None:
    """The package of a module: ``geometry.encode`` in tinyspp/detect/detector.py is a sibling."""
    return modname.rpartition(".")[0] or None if modname else None


def _unique_suffix(py, target: str, reftype: str) -> str | None:
    """The one documented object whose dotted name ends with ``target`` (``FeatureStore.records``
    written in a module that does not import ``FeatureStore``), if exactly one does."""
    objtypes = set(py.objtypes_for_role(reftype) or ()) or None
    suffix = "." + target.lstrip("~.")
    matches = {name for name, entry in py.objects.items()
               if name.endswith(suffix) and not entry.aliased
               and (objtypes is None or entry.objtype in objtypes)}
    return matches.pop() if len(matches) == 1 else None


# outside names that may not be importable here: the usual aliases and the optional GPU/bench deps
_OUTSIDE_HEADS = {"np", "cp", "cupy", "cupyx", "torch", "numba"}


def _is_outside(target: str) -> bool:
    head = target.lstrip("~.").split(".")[0]
    if head == "tinyspp" or not head:
        return False
    if head in vars(builtins) or head in _OUTSIDE_HEADS:
        return True
    try:
        return importlib.util.find_spec(head) is not None
    except (ImportError, ValueError):
        return False


def _missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    py = env.get_domain("py")
    candidates = [API.aliases.get(target),
                  _resolve_in_module(node.get("py:module"), node.get("py:class"), target),
                  _resolve_in_module(_defining_module(node.source), None, target),
                  _resolve_in_module(_parent(_defining_module(node.source)), None, target)]
    for candidate in filter(None, candidates):
        found = py.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], candidate,
                                node, contnode)
        if found is None and node["reftype"] != "obj":
            found = py.resolve_xref(env, node["refdoc"], app.builder, "obj", candidate,
                                    node, contnode)
        if found is not None:
            return found
    unique = _unique_suffix(py, target, node["reftype"])
    if unique:
        return py.resolve_xref(env, node["refdoc"], app.builder, "obj", unique, node, contnode)
    if _is_outside(target):
        return contnode
    return None


def _first_sentence(doc, settings):
    """autosummary's summary line, with the check it means to make: a sentence split that breaks
    inline markup (``a .. b``) is not a sentence end (Sphinx 9 re-parses the whole stanza instead
    of the candidate, so the check never fires)."""
    stanza = []
    for line in doc:
        if not line.strip():
            if stanza:
                break
            continue
        stanza.append(line)
    if not stanza:
        return ""
    node = autosummary._parse_summary(stanza, settings)
    if not node.children or not isinstance(node[0], nodes.paragraph):
        return _original_extract_summary(doc, settings)
    sentences = autosummary.periods_re.split(" ".join(stanza))
    summary = sentences[0].strip()
    for i in range(len(sentences)):
        summary = ". ".join(sentences[: i + 1]).rstrip(".") + "."
        if summary.endswith(autosummary.WELL_KNOWN_ABBREVIATIONS):
            continue
        if not any(autosummary._parse_summary([summary], settings).findall(nodes.system_message)):
            break
    return autosummary.literal_re.sub(".", summary)




def _numpydoc_warnings_fail(message, category, filename, lineno, file=None, line=None):
    """numpydoc drops a section it does not know with a Python warning (``Unknown section
    Extra Parameters``): made a Sphinx warning, so that -W fails the build."""
    if "numpydoc" in filename:
        logging.getLogger("numpydoc").warning(str(message), type="numpydoc")
    else:
        _python_showwarning(message, category, filename, lineno, file, line)




_QUALIFIED = re.compile(r"^tinyspp(\.[A-Za-z_]\w*)*$")


def _link_literals(app, doctree, docname):
    """Code that spells a documented name in full (``tinyspp.ops.conv2d_forward``, as the
    docstrings often do) links to its page, as a role would."""
    if app.builder.format != "html":
        return
    py = app.env.get_domain("py")
    for literal in list(doctree.findall(nodes.literal)):
        if isinstance(literal.parent, (nodes.reference, addnodes.pending_xref)):
            continue
        text = literal.astext().removesuffix("()")
        if not _QUALIFIED.match(text):
            continue
        name = API.aliases.get(text, text)
        entry = py.objects.get(name) or py.modules.get(name)
        if entry is None:
            continue
        uri = app.builder.get_relative_uri(docname, entry.docname) + "#" + entry.node_id
        reference = nodes.reference("", "", internal=True, refuri=uri, reftitle=name)
        reference += literal.deepcopy()
        literal.replace_self(reference)


_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:\s*[^#=]+?(?:=[^#]*)?(?:#\s?(.*))?$")
_COMMENT_LINE = re.compile(r"^\s+#\s*(.*)$")


def _field_comments(cls) -> dict[str, str]:
    """``name: type  # comment`` lines of a NamedTuple's source: field -> comment (continued on
    the ``#`` lines below it)."""
    try:
        source = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    comments, last = {}, None
    for line in source[1:]:
        field = _FIELD_LINE.match(line)
        more = _COMMENT_LINE.match(line)
        if field and field[1] in getattr(cls, "_fields", ()):
            last = field[1]
            comments[last] = (field[2] or "").strip()
        elif more and last:
            comments[last] = f"{comments[last]} {more[1].strip()}".strip()
        else:
            last = None
    return comments


def _rst_escape(text: str) -> str:
    return re.sub(r"([\\`*_|])", r"\\\1", text)


def _namedtuple_fields(app, what, name, obj, options, lines):
    """A NamedTuple field's docstring is "Alias for field number 0": show its annotation and the
    comment written beside it in the source instead (``x_shape: tuple  # (N, C, H, W)``)."""
    content = [line for line in lines if line.strip()]
    if not (len(content) == 1 and content[0].startswith("Alias for field number")):
        return
    owner_name, _, field = name.rpartition(".")
    owner = _object_named(owner_name)
    if owner is None:
        return
    annotation = getattr(owner, "__annotations__", {}).get(field)
    comment = _field_comments(owner).get(field, "")
    if annotation is not None and not isinstance(annotation, str):
        annotation = (getattr(annotation, "__forward_arg__", None)  # (from __future__ ...)
                      or getattr(annotation, "__name__", str(annotation)))
    text = f"``{annotation}``" if annotation else ""
    if comment:
        text = f"{text}: {_rst_escape(comment)}" if text else _rst_escape(comment)
    lines[:] = [text or content[0], ""]


def _object_named(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def _always_reread(app, env, added, changed, removed):
    """The pages whose toctrees are made from what exists (pages come and go)."""
    return [name for name in ("guide/index", "notebooks/index") if name in env.found_docs]


_original_extract_summary = autosummary.extract_summary
_python_showwarning = warnings.showwarning


def setup(app):
    sync_notebooks()
    write_guide_index()
    autosummary.extract_summary = _first_sentence
    warnings.showwarning = _numpydoc_warnings_fail
    app.connect("source-read", _source_read)
    app.connect("include-read", _include_read)
    app.connect("env-get-outdated", _always_reread)
    app.connect("doctree-resolved", _link_literals)
    app.connect("autodoc-process-docstring", _namedtuple_fields, priority=400)
    app.connect("missing-reference", _missing_reference)
    return {"parallel_read_safe": False, "parallel_write_safe": False}
