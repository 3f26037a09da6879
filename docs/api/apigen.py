"""Write the API reference's reStructuredText pages from the package itself (run by ``conf.py``).

Every module of ``tinyspp`` whose dotted name has no part starting with ``_`` gets a page; so do
its public functions and classes. A module's public names are its ``__all__`` when it has one,
otherwise the functions and classes it defines whose names do not start with ``_``.

An object re-exported by several modules (``tinyspp.spp_forward`` is ``tinyspp.ops.spp_forward``
is ``tinyspp.ops.spp.spp_forward``) is documented once, under its *canonical* name: the shortest
exporting module below the top-level package (``tinyspp.ops``), else the defining module. The other
modules' pages list it with a link to that page, and autodoc records the defining module as the
``:canonical:`` name, so references to any of the three names resolve to the one page.

The pages go to ``docs/api/generated/`` (git-ignored), rewritten on every build so that a module
added to the package appears without an edit here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "tinyspp"


@dataclass
class Module:
    name: str
    module: object
    ispkg: bool
    public: dict = field(default_factory=dict)  # name -> object
    data: list = field(default_factory=list)  # public names that are neither functions nor classes


def _is_documentable(obj) -> bool:
    """Classes and functions, decorated ones too (``functools.lru_cache`` wrappers)."""
    return inspect.isclass(obj) or inspect.isfunction(inspect.unwrap(obj))


def discover(package: str = PACKAGE) -> list[Module]:
    """Import every public module of ``package``; return them with their public names."""
    root = importlib.import_module(package)
    found = [(package, True)]
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append((info.name, info.ispkg))
    modules = []
    for name, ispkg in sorted(found):
        mod = importlib.import_module(name)
        entry = Module(name, mod, ispkg)
        if hasattr(mod, "__all__"):
            for attr in mod.__all__:
                obj = getattr(mod, attr)
                if inspect.ismodule(obj):
                    continue  # submodules have their own pages
                if _is_documentable(obj):
                    entry.public[attr] = obj
                else:
                    entry.data.append(attr)
        else:
            for attr, obj in vars(mod).items():
                if (not attr.startswith("_") and _is_documentable(obj)
                        and getattr(obj, "__module__", None) == name):
                    entry.public[attr] = obj
            entry.data = _constants(mod)
        modules.append(entry)
    return modules


def _constants(mod) -> list[str]:
    """UPPER_CASE names assigned at the top level of ``mod``'s source (its public constants)."""
    try:
        tree = ast.parse(inspect.getsource(mod))
    except (OSError, TypeError):
        return []
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        for t in targets:
            if (isinstance(t, ast.Name) and t.id.isupper() and not t.id.startswith("_")
                    and t.id not in names):
                names.append(t.id)
    return names


def canonical_names(modules: list[Module]) -> dict[int, str]:
    """``id(obj) -> "module.name"``: where each public object is documented."""
    exporters: dict[int, list[tuple[int, str, str]]] = {}
    for m in modules:
        for attr, obj in m.public.items():
            depth = m.name.count(".") if m.name != PACKAGE else 99  # top level: last resort
            exporters.setdefault(id(obj), []).append((depth, m.name, attr))
    return {key: f"{mod}.{attr}" for key, (_, mod, attr) in
            ((k, min(v)) for k, v in exporters.items())}


def xref_aliases(modules: list[Module]) -> dict[str, str]:
    """Short class names that name exactly one public class -> their canonical name.

    numpydoc uses them to link the types in ``Parameters``/``Returns`` (``cache : SPPCache``).
    """
    canon = canonical_names(modules)
    seen: dict[str, set[str]] = {}
    for m in modules:
        for attr, obj in m.public.items():
            if inspect.isclass(obj):
                seen.setdefault(attr, set()).add(canon[id(obj)])
    return {short: next(iter(full)) for short, full in seen.items() if len(full) == 1}


def _title(text: str) -> str:
    text = text.replace("_", r"\_")
    return f"{text}\n{'=' * len(text)}\n"


def _section(text: str) -> str:
    return f"{text}\n{'-' * len(text)}\n"


def _autosummary(names: list[str], module: str | None = None) -> str:
    """A summary table; names below ``module`` (the current module) are written relative."""
    if module:
        names = [n.removeprefix(module + ".") for n in names]
    body = "".join(f"   {n}\n" for n in names)
    return f".. autosummary::\n\n{body}\n"


# --- "Used in": the notebooks and guide pages whose code calls an object ----------------------

def notebook_code(path: Path) -> list[str]:
    """The code cells of a notebook, in order."""
    import json

    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


_FENCE = re.compile(r"^```+\s*(?:python|py|pycon|ipython3?)\s*$\n(.*?)^```+\s*$",
                    re.MULTILINE | re.DOTALL)


def markdown_code(path: Path) -> list[str]:
    """The Python code blocks of a Markdown page (doctest prompts removed)."""
    blocks = _FENCE.findall(path.read_text(encoding="utf-8"))
    return ["\n".join(line[4:] if line.startswith((">>> ", "... ")) else line
                      for line in block.splitlines()) for block in blocks]


def _resolve(namespace: dict, node):
    """The object an expression ``a.b.c`` names, if ``a`` came from an import of tinyspp."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(namespace, node.value)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def used_objects(cells: list[str]) -> list:
    """Objects of tinyspp that code uses: names imported from it, attributes of its modules.

    Read from the syntax tree, cell after cell (an import in one cell serves the next); a cell
    that does not parse (IPython magics) is skipped.
    """
    namespace: dict[str, object] = {}
    used: dict[int, object] = {}
    for code in cells:
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE:
                mod = importlib.import_module(node.module)
                for alias in node.names:
                    obj = getattr(mod, alias.name, None)
                    if obj is None:
                        try:
                            obj = importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            continue
                    namespace[alias.asname or alias.name] = obj
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        target = alias.name if alias.asname else alias.name.split(".")[0]
                        importlib.import_module(alias.name)
                        namespace[alias.asname or target] = importlib.import_module(target)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Name, ast.Attribute)):
                obj = _resolve(namespace, node)
                if obj is not None and not inspect.ismodule(obj):
                    used[id(obj)] = obj
    return list(used.values())


def _object_page(full: str, obj, also: list[str], used_in: list[str] = ()) -> str:
    modname, attr = full.rsplit(".", 1)
    kind = "autoclass" if inspect.isclass(obj) else "autofunction"
    lines = [_title(full), f".. currentmodule:: {modname}\n", f".. {kind}:: {attr}"]
    if inspect.isclass(obj):
        lines += ["   :members:", "   :show-inheritance:"]
    lines.append("")
    if also:
        refs = ", ".join(f"``{a}``" for a in also)
        lines.append(f"Also importable as {refs}.\n")
    if used_in:
        lines.append(".. rubric:: Used in\n")
        lines += [f"* :doc:`/{doc}`" for doc in used_in]
        lines.append("")
    return "\n".join(lines) + "\n"


def _module_page(m: Module, modules: list[Module], canon: dict[int, str]) -> tuple[str, list]:
    subs = [s.name for s in modules
            if s.name.rsplit(".", 1)[0] == m.name and s.name != m.name]
    own = {attr: obj for attr, obj in m.public.items() if canon[id(obj)] == f"{m.name}.{attr}"}
    elsewhere = sorted({canon[id(obj)] for attr, obj in m.public.items() if attr not in own})
    parts = [_title(m.name), f".. automodule:: {m.name}\n", f".. currentmodule:: {m.name}\n"]
    if subs:
        parts += [_section("Submodules"), _autosummary(subs, m.name)]
    funcs = [a for a, o in own.items() if not inspect.isclass(o)]
    classes = [a for a, o in own.items() if inspect.isclass(o)]
    if funcs:
        parts += [_section("Functions"), _autosummary(funcs)]
    if classes:
        parts += [_section("Classes"), _autosummary(classes)]
    if m.data:
        parts.append(_section("Constants"))
        for attr in m.data:
            parts.append(f".. autodata:: {attr}\n")
    if elsewhere:
        label = ("Re-exported here" if m.ispkg or hasattr(m.module, "__all__")
                 else "Defined here, documented under a shorter name")
        parts += [_section(label), "".join(f"* :py:obj:`{n}`\n" for n in elsewhere)]
    pages = [f"{m.name}.{a}" for a in own] + subs
    if pages:
        parts.append(".. toctree::\n   :hidden:\n\n" + "".join(f"   {p}\n" for p in pages))
    return "\n".join(parts), list(own.items())


@dataclass
class Api:
    """What the pages document: ``canon`` maps ``id(obj)`` to its documented name, ``aliases``
    every other name an object is reachable by (re-exports, the defining module) to that name."""

    modules: list[Module]
    canon: dict[int, str]
    aliases: dict[str, str]

    def documented_name(self, obj) -> str | None:
        """The page name of a public object or module, ``None`` if it has none."""
        if inspect.ismodule(obj):
            name = obj.__name__
            return name if any(m.name == name for m in self.modules) else None
        return self.canon.get(id(obj))


def write_pages(outdir: Path, code: dict[str, list[str]] | None = None) -> Api:
    """(Re)write every page into ``outdir``; return what they document.

    ``code`` maps a site page (docname) to its code cells or blocks: each object page lists the
    pages whose code uses the object ("Used in").
    """
    modules = discover()
    canon = canonical_names(modules)
    used_in: dict[int, list[str]] = {}
    # the notebooks first (the learning path), then the guide pages
    for docname, cells in sorted((code or {}).items(),
                                 key=lambda kv: (not kv[0].startswith("notebooks/"), kv[0])):
        for obj in used_objects(cells):
            if id(obj) in canon:
                used_in.setdefault(id(obj), []).append(docname)
    names = {m.name for m in modules}
    also: dict[int, list[str]] = {}
    aliases: dict[str, str] = {}
    for m in modules:
        for attr, obj in m.public.items():
            full = f"{m.name}.{attr}"
            if full != canon[id(obj)]:
                also.setdefault(id(obj), []).append(full)
                aliases[full] = canon[id(obj)]
            defined = f"{obj.__module__}.{obj.__qualname__}"
            if defined != canon[id(obj)]:
                aliases[defined] = canon[id(obj)]
    pages: dict[str, str] = {}
    for m in modules:
        text, own = _module_page(m, modules, canon)
        pages[m.name] = text
        for attr, obj in own:
            full = f"{m.name}.{attr}"
            if full in names:
                raise RuntimeError(f"apigen: {full} is both a module and an object")
            pages[full] = _object_page(full, obj, sorted(also.get(id(obj), [])),
                                       used_in.get(id(obj), []))
    files = {f"{name}.rst": text for name, text in pages.items()}
    # the table of every module on the reference's front page (included there, not a page)
    files["modules.txt"] = _autosummary([m.name for m in modules])
    outdir.mkdir(parents=True, exist_ok=True)
    # Only what changed is written and only what is gone is removed: Sphinx then re-reads just
    # those pages, and two builds of one tree at once never delete each other's files.
    for name, text in files.items():
        path = outdir / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    for path in outdir.iterdir():
        if path.name not in files:
            path.unlink()
    return Api(modules, canon, aliases)
