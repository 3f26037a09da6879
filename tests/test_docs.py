"""The documentation site (``make docs``): it builds with warnings as errors, it holds every page it
should, its links resolve, and its pages work in a real browser (the home page, every notebook,
the API page of ``tinyspp.ops.spp_forward``, the exercises, the search).

The site is built once per session (``docs/make_site.py``, the command ``make docs`` runs) into a
temporary folder, or into ``$TINYSPP_DOCS_OUT`` when set (to look at the result). The browser is
Debian's headless Chromium, driven over its DevTools protocol with a small websocket client (below),
the site served by ``http.server`` on 127.0.0.1. Screenshots go to ``<build folder>/screenshots``.
Without Chromium the browser tests skip on a developer's machine and fail in CI (``CI=true``):
``.ci/run`` installs it.
"""

from __future__ import annotations

import base64
import functools
import html
import html.parser
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "api"))

import apigen  # noqa: E402  (docs/api/apigen.py: what the API reference documents)

pytestmark = pytest.mark.slow

NOTEBOOK = "01_bin_math"  # the notebook page of the figure and maths screenshots
BROWSER_PAGES = {
    "home": "index.html",
    "notebook": f"notebooks/{NOTEBOOK}.html",
    "api-spp_forward": "api/generated/tinyspp.ops.spp_forward.html",
    "exercises": "exercises.html",
}
# every other notebook too (a second or two each): each is a page a student opens
BROWSER_PAGES |= {f"notebook-{p.stem}": f"notebooks/{p.stem}.html"
                  for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if p.stem != NOTEBOOK}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the site once: ``python docs/make_site.py OUT``; return ``OUT``."""
    out = Path(os.environ.get("TINYSPP_DOCS_OUT") or tmp_path_factory.mktemp("docs"))
    shutil.rmtree(out / "html", ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "make_site.py"), str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"the docs build failed:\n{proc.stdout}\n{proc.stderr}"
    (out / "build-seconds.txt").write_text(f"{seconds:.1f}\n")
    return out


# --- what the site holds -----------------------------------------------------------------------

def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_site_has_home_notebooks_pages_and_api(site):
    out = site / "html"
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (out / "notebooks" / f"{nb.stem}.html").is_file(), f"no page for {nb.name}"
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert (out / f"{page.stem}.html").is_file(), f"no page for docs/{page.name}"
    modules = apigen.discover()
    canon = apigen.canonical_names(modules)
    for m in modules:
        assert (out / "api" / "generated" / f"{m.name}.html").is_file(), m.name
        for obj in m.public.values():
            assert (out / "api" / "generated" / f"{canon[id(obj)]}.html").is_file()
    assert {"tinyspp.ops", "tinyspp.apps", "tinyspp.detect", "tinyspp.kernels"} <= {
        m.name for m in modules}


def test_home_page_is_the_readme(site):
    """The home page includes README.md (one source): its headings are the README's."""
    readme = _text(ROOT / "README.md")
    headings = [line.lstrip("#").strip() for line in readme.splitlines()
                if line.startswith("#") and not line.startswith("#!")]
    page = _Page.parse(site / "html" / "index.html")
    assert headings and all(h.replace("`", "") in page.headings for h in headings), (
        set(headings) - set(page.headings))


def _page_text(path: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", _text(path)))  # (code is split into spans)


def test_notebooks_are_rendered_from_stored_outputs(site):
    """Every stored figure and printed line of a notebook is on its page, as stored."""
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        outputs = [out for cell in json.loads(_text(nb))["cells"]
                   for out in cell.get("outputs", [])]
        path = site / "html" / "notebooks" / f"{nb.stem}.html"
        page, text = _Page.parse(path), _page_text(path)
        stored = sum("image/png" in out.get("data", {}) for out in outputs)
        shown = [src for src in page.images if "_images/" in src]
        assert len(shown) >= stored, f"{nb.name}: {stored} stored figures, {len(shown)} shown"
        printed = [line.strip() for out in outputs if out["output_type"] == "stream"
                   for line in "".join(out["text"]).splitlines() if line.strip()]
        missing = [line for line in printed if line not in text]
        assert not missing, f"{nb.name}: stored output not on the page: {missing[:3]}"


def test_exercises_page_says_how_grading_works(site):
    page = site / "html" / "exercises.html"
    assert page.is_file(), "docs/exercises.md (the exercises and the grader) has no page"
    assert "python -m tinyspp grade" in _page_text(page)


def test_api_page_renders_numpydoc_sections_and_cross_links(site):
    path = site / "html" / "api" / "generated" / "tinyspp.ops.spp_forward.html"
    page = _Page.parse(path)
    text = _text(path)
    for section in ("Parameters", "Returns"):
        assert f">{section}<" in text, f"numpydoc section {section} not rendered"
    assert "tinyspp.ops.SPPCache.html" in " ".join(page.links), "no link to the cache's page"
    assert "tinyspp.ops.spp_backward.html" in " ".join(_Page.parse(
        site / "html" / "api" / "generated" / "tinyspp.ops.html").links)
    # notebooks <-> API: the page lists the notebooks using the function, and their code links it
    assert f"../../notebooks/{NOTEBOOK}.html" in page.links, "no 'Used in' link to the notebook"
    notebook = _Page.parse(site / "html" / "notebooks" / f"{NOTEBOOK}.html")
    assert any("tinyspp.ops.spp_forward.html" in link for link in notebook.links)


# --- links --------------------------------------------------------------------------------------

class _Page(html.parser.HTMLParser):
    """The links, images, resources, element ids and headings of one HTML file."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links, self.images, self.resources, self.ids = [], [], [], set()
        self.headings, self._heading = [], None

    @classmethod
    def parse(cls, path: Path) -> _Page:
        page = cls()
        page.feed(_text(path))
        return page

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        if tag in ("script", "img", "source", "iframe") and attrs.get("src"):
            self.resources.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.resources.append(attrs["href"])
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._heading = []

    def handle_data(self, data):
        if self._heading is not None:
            self._heading.append(data)

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6") and self._heading is not None:
            self.headings.append("".join(self._heading).replace("#", "").strip())
            self._heading = None


def _is_external(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme != "" or url.startswith("//")


def test_every_internal_link_and_image_resolves(site):
    out = site / "html"
    pages = {p.relative_to(out).as_posix(): _Page.parse(p) for p in out.rglob("*.html")
             if "_static" not in p.parts}  # (the theme ships template snippets there)
    broken = []
    for name, page in pages.items():
        for url in page.links + page.images + page.resources:
            if _is_external(url):
                continue
            parts = urllib.parse.urlsplit(url)
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name),
                                                       urllib.parse.unquote(parts.path)))
            if not parts.path:
                target = name
            if not (out / target).is_file():
                broken.append(f"{name}: {url}")
            elif parts.fragment and target in pages and parts.fragment not in pages[target].ids:
                broken.append(f"{name}: {url} (no element with that id)")
    assert len(pages) > 50
    assert not broken, "\n".join(broken[:40])


def test_site_loads_nothing_from_outside(site):
    """Offline: every script, stylesheet, font and image is served by the site itself."""
    out = site / "html"
    outside = [f"{p.relative_to(out)}: {url}" for p in out.rglob("*.html")
               if "_static" not in p.parts for url in _Page.parse(p).resources if _is_external(url)
               and not url.startswith("data:")]
    assert not outside, "\n".join(outside[:20])
    css = [f"{p.relative_to(out)}" for p in (out / "_static").rglob("*.css")
           if "@import url(http" in _text(p) or "url(https://" in _text(p)]
    assert not css, css


# --- the browser ----------------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--disable-dev-shm-usage",
                  "--window-size=1280,900", "--remote-debugging-port=0"]


class Chromium:
    """Headless Chromium and its DevTools protocol over one websocket (flat sessions)."""

    def __init__(self, executable: str, profile: Path):
        import websocket  # websocket-client (docs extra)

        self.log = open(profile.parent / "chromium.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                      "about:blank"], stdout=self.log, stderr=self.log)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().split()) == 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not start (see {self.log.name})")
            time.sleep(0.1)
        port, path = port_file.read_text().split()
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}",
                                              suppress_origin=True, timeout=60)
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, session: str | None = None, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.events.append(json.loads(self.ws.recv()))

    def close(self):
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 -- the browser may already be gone
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.ws.close()
        self.log.close()


# Runs in the page once it has loaded: waits for every image, for MathJax and for the fonts, then
# reports what a reader would see.
PAGE_CHECK = r"""(async () => {
  const images = [...document.images];
  images.forEach(img => { img.loading = "eager"; });
  await Promise.all(images.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener("load", done); img.addEventListener("error", done); })));
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  let mathjax = null;
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise; mathjax = MathJax.version; }
  await document.fonts.ready;
  const maths = [...document.querySelectorAll(".math")];
  // TeX left in the text, outside code: maths that was not recognised as maths
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const rawTeX = [];
  const tex = /\$|\\(frac|lfloor|lceil|sum|text|cdot|mathrm)\b/;  // (no prose here has a $)
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest("pre, code, script, style, mjx-container, .math")) continue;
    if (tex.test(node.textContent)) rawTeX.push(node.textContent.trim().slice(0, 80));
  }
  return {
    rawTeX: rawTeX,
    title: document.title,
    images: images.map(img => [img.currentSrc || img.src, img.naturalWidth]),
    maths: maths.length,
    typeset: maths.filter(m => m.querySelector("mjx-container")).length,
    mathErrors: document.querySelectorAll("mjx-merror, [data-mjx-error]").length,
    mathjax: mathjax,
  };
})()"""


def _problems(events: list[dict], session: str, origin: str) -> list[str]:
    """Console errors, uncaught exceptions, failed or outside requests of one page."""
    found, urls = [], {}
    for event in events:
        if event.get("sessionId") != session:
            continue
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            found.append(f"console.{params['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            found.append("exception: " + details.get("exception", {}).get(
                "description", details.get("text", "")))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            found.append(f"log: {entry['text']} {entry.get('url', '')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            urls[params["requestId"]] = url
            if not url.startswith((origin, "data:", "blob:", "about:")):
                found.append(f"request outside the site: {url}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            found.append(f"failed: {urls.get(params['requestId'])} {params['errorText']}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            found.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
    return found


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(site):
    """The built site over HTTP on 127.0.0.1 (an ephemeral port); yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site / "html"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        message = "Debian's chromium is not installed (`apt-get install chromium`; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with tempfile.TemporaryDirectory(prefix="tinyspp-chromium-") as tmp:
        profile = Path(tmp) / "profile"
        profile.mkdir()
        chromium = Chromium(executable, profile)
        try:
            yield chromium
        finally:
            chromium.close()


def visit(chromium: Chromium, url: str, origin: str, shots: list[tuple[Path, str | None]],
          wait_until: str | None = None):
    """Load ``url`` in a new tab; return (PAGE_CHECK's report, problems); write screenshots.

    ``wait_until``: a JavaScript condition polled (up to 20 s) before the screenshots."""
    target = chromium.send("Target.createTarget", url="about:blank")["targetId"]
    session = chromium.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            chromium.send(f"{domain}.enable", session)
        chromium.send("Emulation.setDeviceMetricsOverride", session, width=1280, height=900,
                      deviceScaleFactor=1, mobile=False)
        chromium.send("Page.navigate", session, url=url)
        chromium.wait_for("Page.loadEventFired", session)
        report = chromium.send("Runtime.evaluate", session, expression=PAGE_CHECK,
                               awaitPromise=True, returnByValue=True, timeout=60000)
        if "exceptionDetails" in report:
            raise RuntimeError(f"{url}: the page check threw {report['exceptionDetails']}")
        report = report["result"]["value"]
        deadline = time.monotonic() + 20
        while wait_until and time.monotonic() < deadline:
            done = chromium.send("Runtime.evaluate", session, expression=f"!!({wait_until})",
                                 returnByValue=True)
            report["waited_for"] = done["result"].get("value", False)
            if report["waited_for"]:
                break
            time.sleep(0.2)
        for path, scroll_to in shots:
            if scroll_to:
                chromium.send("Runtime.evaluate", session, expression=(
                    f"document.querySelector({json.dumps(scroll_to)})"
                    ".scrollIntoView({block: 'center'})"))
                time.sleep(0.3)
            png = chromium.send("Page.captureScreenshot", session, format="png")["data"]
            path.write_bytes(base64.b64decode(png))
        time.sleep(0.5)  # late errors (a font or a script that fails after load)
        chromium.send("Runtime.evaluate", session, expression="1")
        return report, _problems(chromium.events, session, origin)
    finally:
        chromium.send("Target.closeTarget", targetId=target)
        chromium.events = [e for e in chromium.events if e.get("sessionId") != session]


def test_search_works_offline(site, served, browser):
    """The search page (Sphinx's JavaScript over searchindex.js) finds spp_forward's page."""
    found = "document.querySelector('#search-results a[href*=\"tinyspp.ops.spp_forward\"]')"
    shot = site / "screenshots" / "search.png"
    shot.parent.mkdir(exist_ok=True)
    report, problems = visit(browser, served + "search.html?q=spp_forward", served,
                             [(shot, None)], wait_until=found)
    assert not problems, "\n".join(problems)
    assert report["waited_for"], "the search found no link to tinyspp.ops.spp_forward"


@pytest.mark.parametrize("name", list(BROWSER_PAGES))
def test_page_works_in_chromium(site, served, browser, name):
    """No console error, no failed or outside request, every image decoded, maths typeset."""
    shots_dir = site / "screenshots"
    shots_dir.mkdir(exist_ok=True)
    shots = [(shots_dir / f"{name}.png", None)]
    if name == "notebook":
        shots.append((shots_dir / f"{name}-figure.png", "div.cell_output img"))
    if name in ("notebook", "api-spp_forward"):
        shots.append((shots_dir / f"{name}-maths.png", ".math"))

    report, problems = visit(browser, served + BROWSER_PAGES[name], served, shots)

    assert not problems, f"{name}: " + "\n".join(problems)
    assert report["title"], f"{name}: no title"
    undecoded = [src for src, width in report["images"] if width == 0]
    assert not undecoded, f"{name}: images that did not decode: {undecoded}"
    assert report["typeset"] == report["maths"], f"{name}: maths not typeset: {report}"
    assert report["mathErrors"] == 0, f"{name}: MathJax reported TeX errors"
    assert not report["rawTeX"], f"{name}: TeX shown as text: {report['rawTeX'][:5]}"
    if name == "notebook":
        assert len(report["images"]) > 0, report
    if name in ("notebook", "api-spp_forward"):  # (spp_forward's Notes hold the output length)
        assert report["maths"] > 0 and report["mathjax"], f"{name}: no maths typeset: {report}"
    for path, _ in shots:
        assert path.stat().st_size > 10_000, f"{path.name}: screenshot looks empty"
