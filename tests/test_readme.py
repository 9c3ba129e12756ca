"""The Python snippets of README.md and docs/*.md run, as a reader would run them.

Every fenced ```python block of a page runs, in page order, in one namespace per page
(later snippets may use what earlier ones defined, as a reader's session would). A block
made of ``>>>`` lines is a doctest: its printed results are checked too. The only blocks
skipped are those right after a ``<!-- not run -->`` line (fragments that cannot run on
their own, such as a recipe that needs the reader's own checkpoint); that marker is kept
rare, see ``test_few_snippets_are_marked_not_run``.
"""

from __future__ import annotations

import doctest
import pathlib
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = "<!-- not run -->"
FENCE = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


class Snippet(NamedTuple):
    page: str
    line: int  # of the opening fence, 1-based
    code: str
    runs: bool


def snippets(page: pathlib.Path, name: str | None = None) -> list[Snippet]:
    """The page's ```python blocks; ``runs`` is False after a ``<!-- not run -->`` line."""
    text = page.read_text()
    name = page.relative_to(ROOT).as_posix() if name is None else name
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip().rsplit("\n", 1)[-1].strip()
        line = text.count("\n", 0, m.start()) + 1
        out.append(Snippet(name, line, m.group(1), before != NOT_RUN))
    return out


def run_snippet(snippet: Snippet, namespace: dict) -> None:
    """Execute one snippet in ``namespace`` (a doctest if it is made of ``>>>`` lines)."""
    where = f"{snippet.page}:{snippet.line}"
    if snippet.code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(snippet.code, namespace, where, where, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        runner.run(test, clear_globs=False)
        assert runner.failures == 0, f"{where}: doctest failed (output above)"
    else:
        exec(compile(snippet.code, where, "exec"), namespace)


def run_page(page: pathlib.Path, namespace: dict | None = None, upto: int | None = None) -> dict:
    """Run a page's runnable snippets in order (the first ``upto`` of them, if given)."""
    namespace = {} if namespace is None else namespace
    for snippet in [s for s in snippets(page) if s.runs][:upto]:
        run_snippet(snippet, namespace)
    return namespace


@pytest.fixture(autouse=True)
def _user_code_may_broadcast():
    """Snippets are user code: rank promotion (banned inside funcopt's tests) is allowed."""
    with jax.numpy_rank_promotion("allow"):
        yield


# ---- every page ------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_snippet_of_the_page_runs_in_order(page):
    run_page(page)


def test_the_pages_with_snippets_are_all_run():
    """Every Python fence is one this test runs (none indented, none spelled ``py``), and
    the main pages have some."""
    for page in PAGES:
        fences = re.findall(r"^\s*```\s*(?:py|python|pycon)\b", page.read_text(), flags=re.M)
        assert len(fences) == len(snippets(page)), f"{page.name}: a fence the test misses"
    counts = {p.relative_to(ROOT).as_posix(): len(snippets(p)) for p in PAGES}
    for page in ["README.md", "docs/concepts.md", "docs/design.md", "docs/performance.md"]:
        assert counts[page] >= 1, page
    assert sum(counts.values()) >= 15, counts


def test_few_snippets_are_marked_not_run():
    """Skipping is the exception: each skipped block is one that cannot run on its own."""
    skipped = [(s.page, s.code.split("\n", 1)[0]) for p in PAGES for s in snippets(p) if not s.runs]
    assert skipped == [
        ("docs/design.md", "class scale_by_momentum(Leafwise):"),  # a two-field excerpt
        ("docs/guarantees.md", "import chex"),  # needs the reader's params_template, data
    ], skipped


def test_a_marker_skips_only_the_next_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nx = 1\n```\n\n<!-- not run -->\n\n```python\nraise SystemExit\n```\n"
        "\n```python\n>>> x + 1\n2\n```\n"
    )
    found = snippets(page, "page.md")
    assert [(s.line, s.runs) for s in found] == [(1, True), (7, False), (11, True)]
    namespace: dict = {}
    for snippet in found:
        if snippet.runs:
            run_snippet(snippet, namespace)
    assert namespace["x"] == 1
    with pytest.raises(AssertionError, match="doctest failed"):
        run_snippet(Snippet("page.md", 0, ">>> x + 1\n3\n", True), namespace)


# ---- README: what the snippets promise --------------------------------------------------


def test_quick_start_trains():
    namespace = run_page(README, upto=1)
    x, y = namespace["x"], namespace["y"]
    first = float(namespace["loss"]({"w": jnp.zeros((3, 1)), "b": jnp.zeros(1)}, x, y))
    assert float(namespace["value"]) < 0.05 * first


def test_readme_definitions_are_the_librarys_optimizers():
    namespace = run_page(README, upto=2)
    assert namespace["gdm"](0.1, 0.9) == funcopt.gdm(0.1, 0.9)
    assert namespace["scale_by_adam"]() == funcopt.scale_by_adam()
    assert namespace["adamw"](3e-4, weight_decay=0.05) == funcopt.adamw(3e-4, weight_decay=0.05)
    assert funcopt.gdm(0.1, 0.9) == funcopt.chain(
        funcopt.scale_by_momentum(0.9), funcopt.scale_by_learning_rate(0.1)
    )


def test_composition_snippets_build_working_transforms():
    namespace = run_page(README, upto=3)
    params = {"w": jnp.ones(3)}
    for name in ["recipe", "in_optax", "in_funcopt"]:
        tx = namespace[name]
        updates, _ = tx.update(params, tx.init(params), params)
        assert updates["w"].shape == (3,), name
    assert namespace["tx"] == funcopt.adam(learning_rate=1e-2)  # the quick start's, intact


def test_speed_snippet_continues_the_quick_start():
    """Quick start, then every README snippet up to Speed, in one namespace: it runs, the
    donated arrays are the ones deleted, and the copy the snippet makes survives."""
    blocks = [s for s in snippets(README) if s.runs]
    speed = next(i for i, s in enumerate(blocks) if "make_packed_train_step" in s.code)
    namespace = run_page(README, upto=speed)
    start = namespace["params"]
    start_values = jax.tree.map(np.array, start)  # a copy: a numpy view would block donation
    run_snippet(blocks[speed], namespace)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(start))  # donated
    for kept, want in zip(
        jax.tree.leaves(namespace["before"]), jax.tree.leaves(start_values), strict=True
    ):
        assert not kept.is_deleted()
        np.testing.assert_array_equal(kept, want)
    x, y = namespace["x"], namespace["y"]
    assert float(namespace["value"]) < 1e-3
    assert float(namespace["loss"](namespace["params"], x, y)) < 1e-3
    # and the other way of keeping the inputs: donate=False deletes nothing
    params, state = namespace["params"], namespace["tx"].init(namespace["params"])
    step = funcopt.make_train_step(namespace["loss"], namespace["tx"], donate=False)
    step(params, state, x, y)
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves((params, state)))


# ---- docs pages: claims the snippets make -----------------------------------------------


def test_design_lifter_snippet_is_second_moment():
    """The page's own ``second_moment`` (the library's source, as shown) computes the same."""
    namespace = run_page(ROOT / "docs" / "design.md")
    mine, lib = namespace["second_moment"](0.5), funcopt.second_moment(0.5)
    assert type(mine) is not type(lib)
    g = jnp.array([2.0, -1.0])
    np.testing.assert_array_equal(
        mine.update(g, mine.init(g))[1].nu, lib.update(g, lib.init(g))[1].nu
    )


def test_performance_fast_path_trains_both_ways():
    namespace = run_page(ROOT / "docs" / "performance.md")
    for name in ["params", "state", "packed", "packed_state"]:
        assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(namespace[name])), name
    assert jax.tree.map(jnp.shape, namespace["params"]) == {"w": (3, 1), "b": (1,)}


def test_the_race_animation_in_the_docs_is_the_examples():
    """docs/images/race.gif is examples/chapter_figures.py's: 600 × 500, 300 steps in 60
    frames (a legible legend), and small enough for a page."""
    from PIL import Image

    gif = ROOT / "docs" / "images" / "race.gif"
    assert gif.stat().st_size < 2_000_000
    with Image.open(gif) as im:
        assert im.size == (600, 500)
        assert im.n_frames == 60
