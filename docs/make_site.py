"""Build the documentation site: ``python docs/make_site.py [OUTDIR]`` (what ``make docs`` runs).

Two steps, both offline apart from one package-registry download that is cached:

1. ``vendor_mathjax()`` puts MathJax into ``build/vendor/static/mathjax`` (git-ignored): the
   ``mathjax`` package of the npm registry, fetched with npm's own client (``npm pack``) at a
   pinned version, checked against the registry's published sha512 and unpacked. The site serves
   these files itself, so no page loads anything from a CDN.
2. Sphinx builds HTML from ``docs/`` into ``OUTDIR/html`` (default ``build/docs``) with warnings
   as errors (``-W --keep-going``) and nitpicky references (``-n``). Notebooks are rendered from
   their stored outputs (``nb_execution_mode = "off"`` in ``conf.py``): nothing is executed.

``conf.py`` calls ``vendor_mathjax()`` too, so a plain ``sphinx-build docs OUT`` works the same.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
VENDOR = ROOT / "build" / "vendor"

MATHJAX_VERSION = "3.2.2"
# `npm view mathjax@3.2.2 dist.integrity`
MATHJAX_SHA512 = (
    "Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
)
# What the site needs of the package's es5/ folder: the TeX-to-HTML bundle, the TeX extensions it
# may autoload, its web fonts, the menu and the accessibility modules the menu can switch on.
MATHJAX_KEEP = ("tex-chtml.js", "input/tex/extensions/", "output/chtml/fonts/woff-v2/",
                "ui/", "a11y/", "sre/")


def mathjax_dir() -> Path:
    """The folder added to ``html_static_path``: it holds ``mathjax/tex-chtml.js``."""
    return VENDOR / "static"


def vendor_mathjax() -> Path:
    """Fetch (once) and unpack MathJax; return the static folder that holds ``mathjax/``."""
    static = mathjax_dir()
    stamp = static / "mathjax" / f".version-{MATHJAX_VERSION}"
    if stamp.exists():
        return static
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("make_site: npm is needed once to fetch MathJax from the npm registry "
                           "(`apt-get install npm`), and was not found on PATH")
    tarball = VENDOR / f"mathjax-{MATHJAX_VERSION}.tgz"
    VENDOR.mkdir(parents=True, exist_ok=True)
    if not tarball.exists() or _sha512(tarball) != MATHJAX_SHA512:
        with tempfile.TemporaryDirectory(dir=VENDOR) as tmp:
            subprocess.run([npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--silent",
                            "--pack-destination", tmp], check=True, cwd=tmp,
                           stdout=subprocess.DEVNULL)
            Path(tmp, tarball.name).replace(tarball)
    got = _sha512(tarball)
    if got != MATHJAX_SHA512:
        raise RuntimeError(f"make_site: {tarball.name} has sha512 {got}, expected "
                           f"{MATHJAX_SHA512} (the npm registry's integrity for the release)")
    dest = static / "mathjax"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            rel = member.name.removeprefix("package/")
            if rel == "LICENSE":
                target = dest / "LICENSE"
            elif rel.startswith("es5/") and rel[4:].startswith(MATHJAX_KEEP):
                target = dest / rel[4:]
            else:
                continue
            if not member.isfile():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    stamp.touch()
    return static


def _sha512(path: Path) -> str:
    return base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def sphinx_command(outdir: Path) -> list[str]:
    """The Sphinx command line of the site: HTML, warnings are errors, nitpicky references, and a
    fresh environment (``-E``: every page is read again, so no warning hides in a cached page)."""
    return [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-W", "--keep-going", "-n", "-q",
            "-d", str(outdir / "doctrees"), str(DOCS), str(outdir / "html")]


def build(outdir: Path) -> float:
    """Build the site into ``outdir/html``; return the seconds it took."""
    start = time.perf_counter()
    vendor_mathjax()
    subprocess.run(sphinx_command(outdir), check=True, cwd=ROOT)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    outdir = Path(argv[0]) if argv else ROOT / "build" / "docs"
    try:
        seconds = build(outdir.resolve())
    except subprocess.CalledProcessError as err:
        print(f"make_site: the Sphinx build failed (exit {err.returncode})", file=sys.stderr)
        return 1
    print(f"make_site: built {outdir / 'html' / 'index.html'} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
