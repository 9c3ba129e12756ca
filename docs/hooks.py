"""MkDocs hook: one API reference page per funcopt module that imports.

Each page is generated at build time as ``api/<module>.md`` holding a mkdocstrings
``::: funcopt.<module>`` block, and the nav's "API reference" section is filled with
them, so a module that is missing or fails to import leaves no dangling page.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from mkdocs.structure.files import File, Files

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


def _page(name: str) -> str:
    lazily = " (imported on first use: `import funcopt.viz`)" if name == "viz" else ""
    return f"# `funcopt.{name}`{lazily}\n\n::: funcopt.{name}\n"


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
    return files
