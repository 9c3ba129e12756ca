"""MkDocs hook: one API reference page per funcopt module that imports.

Each page is generated at build time as ``api/<module>.md`` holding a mkdocstrings
``::: funcopt.<module>`` block, and the nav's "API reference" section is filled with
them, so a module that is missing or fails to import leaves no dangling page.

The site loads nothing from outside: MathJax is copied into it from the
``django-static-mathjax`` wheel (a ``dev`` dependency; it ships MathJax 3's ``es5``
build and needs no Django) as ``javascripts/vendor/mathjax/``, and the theme's web fonts
are off (``theme.font: false`` in ``mkdocs.yml``).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

# Where the vendored MathJax lands in the site; mkdocs.yml's extra_javascript names
# MATHJAX_DIR/tex-chtml.js, and MathJax loads its fonts and any extension relative to it.
MATHJAX_DIR = "javascripts/vendor/mathjax"

# The order of the reference; any other public module found is appended.
ORDER = [
    "base",
    "values",
    "validation",
    "trees",
    "lifting",
    "combine",
    "moments",
    "scaling",
    "preconditioners",
    "optimizers",
    "adaptive",
    "layerwise",
    "factored",
    "orthogonal",
    "schedulefree",
    "clipping",
    "schedules",
    "schedules_composite",
    "wrappers",
    "hyperparams",
    "accumulation",
    "averaging",
    "checkpoints",
    "train",
    "packing",
    "fused",
    "viz",
]
SKIP = {"__main__", "bench", "bench_workloads", "surfaces", "viz_studies"}  # CLI; viz re-exports


def api_modules() -> list[str]:
    """Names of the funcopt submodules that import, in reference order."""
    import funcopt

    found = [m.name for m in pkgutil.iter_modules(funcopt.__path__) if not m.name.startswith("_")]
    names = [m for m in ORDER if m in found] + sorted(set(found) - set(ORDER) - SKIP)
    ok = []
    for name in names:
        try:
            importlib.import_module(f"funcopt.{name}")
        except Exception:  # a module that does not import gets no page
            continue
        ok.append(name)
    return ok


def mathjax_es5() -> Path:
    """The ``es5`` folder of the MathJax 3 build that the ``mathjax`` module ships."""
    spec = importlib.util.find_spec("mathjax")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        es5 = Path(root) / "static" / "mathjax" / "es5"
        if (es5 / "tex-chtml.js").is_file():
            return es5
    raise PluginError(
        "MathJax is not installed: the docs render math with a local copy of it, from the "
        "django-static-mathjax package (pip install -e '.[dev]')."
    )


def _vendor_mathjax(files: Files, config: Any) -> None:
    # The combined component, the extensions its autoloader may fetch, the menu and its
    # accessibility parts, the output jax with their woff fonts, and SRE's maps: all
    # that a page can ask for, so no request ever falls through to a CDN.
    es5 = mathjax_es5()
    wanted = [es5 / "tex-chtml.js"]
    for sub in ("a11y", "adaptors", "input", "output", "sre", "ui"):
        wanted += sorted(p for p in (es5 / sub).rglob("*") if p.is_file())
    for path in wanted:
        uri = f"{MATHJAX_DIR}/{path.relative_to(es5).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    license_ = es5.parent / "LICENSE"
    if license_.is_file():
        files.append(File.generated(config, f"{MATHJAX_DIR}/LICENSE", abs_src_path=str(license_)))


def _page(name: str) -> str:
    lazily = " (imported on first use: `import funcopt.viz`)" if name == "viz" else ""
    return f"# `funcopt.{name}`{lazily}\n\n::: funcopt.{name}\n"


_TABLE = re.compile(r"<table>.*?</table>", re.S)
_CODE = re.compile(r"(<code>)(.*?)(</code>)", re.S)
_AFTER_DOT = re.compile(r"([.(])(?=[A-Za-z_])")
_LONG_WORD = re.compile(r"\w{20,}")  # a snake_case name long enough to widen its column


def _break_text(text: str) -> str:
    text = _LONG_WORD.sub(lambda w: re.sub(r"_(?=[A-Za-z0-9])", "_<wbr>", w.group(0)), text)
    return _AFTER_DOT.sub(r"\1<wbr>", text)


def _breakable(match: re.Match[str]) -> str:
    # Text only, never inside a tag: the code of a table cell is plain text and entities.
    parts = re.split(r"(<[^>]*>)", match.group(2))
    text = "".join(p if p.startswith("<") else _break_text(p) for p in parts)
    return match.group(1) + text + match.group(3)


def on_page_content(html: str, **kwargs: Any) -> str:
    """Let a long name in a table cell wrap between its parts, never inside one.

    docs/stylesheets/extra.css keeps code in tables from breaking inside a word, so
    ``optax.contrib.DifferentiallyPrivateAggregateState`` would otherwise hold its column at
    its full length and push the table past the text column. ``<wbr>`` marks where a name may
    wrap, without changing the text that is copied: after each ``.`` and ``(``, and after the
    ``_`` of a snake_case word of 20 characters or more (``mu_dtype`` stays whole).
    """
    return _TABLE.sub(lambda t: _CODE.sub(_breakable, t.group(0)), html)


def on_config(config: Any) -> Any:
    pages = [{"Overview": "api/index.md"}] + [
        {f"funcopt.{m}": f"api/{m}.md"} for m in api_modules()
    ]
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and "API reference" in entry:
            entry["API reference"] = pages
    return config


def on_files(files: Files, config: Any) -> Files:
    modules = api_modules()
    index = [
        "# API reference\n",
        "Every public name is re-exported at the top level (`funcopt.adam`,",
        "`funcopt.scale_by_rms`, ...); the pages below group them by module.",
        "`funcopt.viz` is the exception: it needs matplotlib and is imported on use.\n",
        *(f"- [`funcopt.{m}`]({m}.md)" for m in modules),
        "",
    ]
    files.append(File.generated(config, "api/index.md", content="\n".join(index)))
    for m in modules:
        files.append(File.generated(config, f"api/{m}.md", content=_page(m)))
    _vendor_mathjax(files, config)
    return files
