"""The documentation site builds with ``mkdocs build --strict`` and documents every name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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
