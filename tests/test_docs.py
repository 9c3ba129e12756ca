"""The documentation site builds with ``mkdocs build --strict`` and documents every name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import funcopt

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = Path(sys.executable).parent / "mkdocs"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def anchors(site: Path) -> set[tuple[str, str]]:
    """(module, name) for every object mkdocstrings rendered in the API pages."""
    html = "".join(p.read_text() for p in (site / "api").glob("*/index.html"))
    return set(re.findall(r'id="funcopt\.(\w+)\.(\w+)"', html))


def test_every_public_name_is_documented(site):
    documented = anchors(site)
    modules = [
        m for m in funcopt.__dict__.values() if getattr(m, "__name__", "").startswith("funcopt.")
    ]
    missing = []
    for name in funcopt.__all__:
        homes = [m.__name__.split(".")[1] for m in modules if name in getattr(m, "__all__", ())]
        assert homes, f"{name} is in funcopt.__all__ but in no submodule's __all__"
        if not any((home, name) in documented for home in homes):
            missing.append(name)
    assert not missing, f"not in the API reference: {missing}"


def test_viz_is_documented(site):
    from funcopt import viz

    documented = anchors(site)
    assert [n for n in viz.__all__ if ("viz", n) not in documented] == []


def test_pages_and_images(site):
    for page in [
        "index.html",
        "concepts/index.html",
        "math/index.html",
        "examples/index.html",
        "design/index.html",
        "migrating-from-optax/index.html",
        "performance/index.html",
        "guarantees/index.html",
        "api/index.html",
    ]:
        assert (site / page).is_file(), page
    math = (site / "math" / "index.html").read_text()
    assert math.count('class="arithmatex"') > 20  # equations reach MathJax
    images = re.findall(r'src="\.\./images/([^"]+)"', math)
    assert len(images) >= 6, images
    for img in images:
        assert (site / "images" / img).is_file(), img
    assert "chapter-momentum.png" in math and "race.gif" in math
    # Helper files of the build are not published.
    assert not (site / "hooks.py").exists() and not (site / "griffe_examples.py").exists()


# --- The site loads nothing from outside -------------------------------------------------

EXTERNAL = re.compile(r"^\s*(?:https?:)?//", re.I)  # http://, https:// and protocol-relative //
# Link relations that name a page or a document rather than load one.
NOT_LOADED_RELS = {"canonical", "alternate", "author", "license", "help", "me", "next", "prev"}
# Attributes whose URL the browser fetches by itself, on any element.
LOADING_ATTRS = {"src", "poster", "background", "formaction", "xlink:href"}
CSS_URL = re.compile(r"""url\(\s*(["']?)(.*?)\1\s*\)""", re.I | re.S)
CSS_IMPORT = re.compile(r"""@import\s+(?:url\(\s*)?["']?([^"')\s;]+)""", re.I)
# In JavaScript: a URL handed to something that fetches it, or put where HTML or CSS will.
JS_LOADS = re.compile(
    r"""(?:\b(?:src|href|srcset)\s*[=:]\s*\\?["'`]?"""
    r"""|\b(?:import|importScripts|fetch|Worker|SharedWorker|sendBeacon|EventSource)\s*\(\s*["'`]"""
    r"""|\.open\(\s*["'][A-Z]+["']\s*,\s*["'`])"""
    r"""\s*((?:https?:)?//[^"'`\s)\\]+)""",
    re.I,
)
# A URL literal anywhere in JavaScript that points at a file served to pages: a script, a
# style sheet, a font, or anything on a CDN or a font service.
JS_ASSET_URL = re.compile(
    r"""["'`]((?:https?:)?//(?:[^"'`\s]*?(?:cdn|unpkg\.com|fonts\.googleapis\.com|"""
    r"""fonts\.gstatic\.com|polyfill\.io|ajax\.googleapis\.com|code\.jquery\.com)"""
    r"""[^"'`\s]*|[^"'`\s]+\.(?:m?js|css|woff2?|ttf|otf|eot)(?:\?[^"'`\s]*)?))["'`]""",
    re.I,
)
ANCHOR_TAG = re.compile(r"<a\s[^>]*>", re.I)
# Loaders that exist in shipped JavaScript but cannot fire on this site, each with why.
NEVER_FIRE = {
    # The theme's bundle: a ResizeObserver polyfill for browsers that lack ResizeObserver
    # (every current one has it), and mermaid, loaded only on a page with a mermaid diagram
    # (test_site_loads_nothing_from_outside checks that no page has one).
    ("assets/javascripts/bundle.", "https://unpkg.com/resize-observer-polyfill"),
    ("assets/javascripts/bundle.", "https://unpkg.com/mermaid@"),
    # The speech-rule engine inside the vendored MathJax: its default map location, which
    # MathJax's a11y/sre component replaces by its own [mathjax]/sre/mathmaps (vendored, see
    # docs/hooks.py) before SRE starts; and an XPath polyfill and maps for Internet
    # Explorer, used only where document.evaluate is missing.
    ("javascripts/vendor/mathjax/", "https://cdn.jsdelivr.net/npm/speech-rule-engine@"),
    ("javascripts/vendor/mathjax/", "https://cdn.jsdelivr.net/npm/sre-mathmaps-ie@"),
    ("javascripts/vendor/mathjax/", "https://cdn.jsdelivr.net/npm/wicked-good-xpath@"),
}


def css_loads(css: str) -> list[str]:
    """The URLs a style sheet fetches: ``url(...)`` (fonts, images) and ``@import``."""
    return list(
        dict.fromkeys([m.group(2) for m in CSS_URL.finditer(css)] + CSS_IMPORT.findall(css))
    )


def js_loads(js: str) -> list[str]:
    """The URLs a script hands to a loader, plus every script, style or font URL in it."""
    js = ANCHOR_TAG.sub("", js)  # a hyperlink that a script writes into the page is no load
    return list(dict.fromkeys(JS_LOADS.findall(js) + JS_ASSET_URL.findall(js) + css_loads(js)))


class _Loads(HTMLParser):
    """Collects every URL an HTML page makes the browser fetch; ``<a href>`` is not one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v or "" for k, v in attrs}
        for name in LOADING_ATTRS & a.keys():
            self.urls.append(a[name])
        for name in ("srcset", "imagesrcset"):
            self.urls += [c.split()[0] for c in a.get(name, "").split(",") if c.strip()]
        if tag == "link" and not set(a.get("rel", "").lower().split()) <= NOT_LOADED_RELS:
            self.urls.append(a.get("href", ""))
        if tag in ("svg", "use", "image", "feimage") and "href" in a:
            self.urls.append(a["href"])
        if tag == "object":
            self.urls.append(a.get("data", ""))
        if tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            self.urls.append(a.get("content", "").partition("url=")[2])
        self.urls += css_loads(a.get("style", ""))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.urls += css_loads(data)
        elif self._in == "script":
            self.urls += js_loads(data)


def html_loads(html: str) -> list[str]:
    parser = _Loads()
    parser.feed(html)
    return parser.urls


def test_the_scanner_sees_external_loads():
    # The scan below is only as good as these patterns: each kind of load is caught, and
    # hyperlinks, data: URIs, XML namespaces and local paths are not.
    page = """
      <link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">
      <link rel="preconnect" href="https://fonts.gstatic.com">
      <script src="https://cdn.example.org/mathjax/tex-chtml.js"></script>
      <img srcset="a.png 1x, //img.example.org/b.png 2x">
      <div style="background: url('https://img.example.org/c.png')"></div>
      <style>@import "https://example.org/d.css";</style>
      <script>s.src = "https://example.org/e.js"; fetch('https://api.example.org/f')</script>
      <a href="https://github.com/">a plain link</a>
      <link rel="canonical" href="https://example.org/page/">
      <img src="../images/race.gif"><svg xmlns="http://www.w3.org/2000/svg"></svg>
    """
    assert [u for u in html_loads(page) if EXTERNAL.match(u)] == [
        "https://fonts.googleapis.com/css?family=Roboto",
        "https://fonts.gstatic.com",
        "https://cdn.example.org/mathjax/tex-chtml.js",
        "//img.example.org/b.png",
        "https://img.example.org/c.png",
        "https://example.org/d.css",
        "https://example.org/e.js",
        "https://api.example.org/f",
    ]
    css = """@font-face{src:url(https://fonts.gstatic.com/r.woff2) format("woff2")}
      .x{background:url("data:image/svg+xml;charset=utf-8,<svg xmlns='http://www.w3.org/2000/svg'/>")}
      @import url(https://example.org/g.css);"""
    assert [u for u in css_loads(css) if EXTERNAL.match(u)] == [
        "https://fonts.gstatic.com/r.woff2",
        "https://example.org/g.css",
    ]
    js = """n="http://www.w3.org/1998/Math/MathML";l=`https://api.github.com/repos/${e}`;
      _t("https://unpkg.com/x@1/dist/x.min.js");e.innerHTML='<link href="https://h.example.org/i">';
      m='<a href="https://www.mathjax.org">www.mathjax.org</a>';"""
    assert [u for u in js_loads(js) if EXTERNAL.match(u)] == [
        "https://h.example.org/i",
        "https://unpkg.com/x@1/dist/x.min.js",
    ]


def test_site_loads_nothing_from_outside(site):
    """No page, style sheet or script of the built site fetches anything from another host.

    Math is typeset by the vendored MathJax and the theme's web fonts are off, so the site
    works offline; a plain ``<a href>`` to another site is fine, it is only followed on a
    click. ``.ci/docs-check`` watches a real browser's requests for the same thing.
    """
    found = []
    for path in sorted(site.rglob("*")):
        kind = path.suffix.lower()
        if kind not in (".html", ".css", ".js", ".mjs"):
            continue
        rel = path.relative_to(site).as_posix()
        text = path.read_text(errors="replace")
        urls = {".html": html_loads, ".css": css_loads}.get(kind, js_loads)(text)
        for url in urls:
            if not EXTERNAL.match(url):
                continue
            if any(rel.startswith(f) and url.startswith(u) for f, u in NEVER_FIRE):
                continue
            found.append(f"{rel}: {url}")
        if kind == ".html":
            assert 'class="mermaid"' not in text, f"{rel} has a mermaid diagram (CDN load)"
    assert not found, "external resources:\n" + "\n".join(found)


def test_math_and_its_fonts_are_in_the_site(site):
    mathjax = site / "javascripts" / "vendor" / "mathjax"
    assert (mathjax / "tex-chtml.js").is_file()
    assert list((mathjax / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert (mathjax / "sre" / "mathmaps" / "en.json").is_file()
    page = (site / "math" / "index.html").read_text()
    assert '<script src="../javascripts/vendor/mathjax/tex-chtml.js">' in page
    assert '<script src="../javascripts/mathjax.js">' in page
    assert page.index("javascripts/mathjax.js") < page.index("vendor/mathjax/tex-chtml.js")
    assert "fonts.googleapis.com" not in page and "fonts.gstatic.com" not in page


def test_table_code_breaks_only_between_name_parts(site):
    # docs/hooks.py lets a dotted name in a table wrap between its parts, and extra.css
    # keeps it from wrapping inside them.
    page = (site / "migrating-from-optax" / "index.html").read_text()
    assert re.search(r"<td><code>optax\.<wbr>[A-Z]\w+</code>", page)
    assert not re.search(r"<td><code>optax\.\w", page)
    css = (site / "stylesheets" / "extra.css").read_text()
    assert re.search(r"table:not\(\[class\]\) code \{[^}]*word-break: normal", css)
