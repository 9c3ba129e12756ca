"""Run optax's own test suite against funcopt (see shim.py for the substitution rule).

    python tests/optax_compat/run.py [--check] [--all] [--baseline] [-n N] [--json FILE]
                                     [-k EXPR] [--files SUBSTR ...] [--keep]

Copies the test files of the installed optax (less the files EXCLUDED.md leaves out)
into a temporary directory, rewrites their optax imports with ``shim.rewrite`` (and
checks that no other line changed), runs pytest there and prints passed / failed /
skipped / excluded counts and the failures grouped by cause, the known differences
(EXCLUDED.md) apart from the rest. The slow tests EXCLUDED.md lists run with ``--all``
only. ``--baseline`` also runs the same, unmodified, files against optax itself.
``--check`` (what ``make compat`` runs) fails when fewer tests pass than FLOOR says.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import shim  # noqa: E402

OPTAX_DIR = Path(importlib.util.find_spec("optax").origin).parent
NEEDED = ("pytest", "xdist", "absl", "chex", "flax", "scipy", "sklearn")
FLOOR = HERE / "FLOOR"


def check_requirements() -> list[str]:
    return [m for m in NEEDED if importlib.util.find_spec(m) is None]


def test_files() -> list[str]:
    """The optax test files run: all of the wheel's, less EXCLUDED.md's files."""
    found = sorted(p.relative_to(OPTAX_DIR).as_posix() for p in OPTAX_DIR.rglob("*_test.py"))
    left_out = shim.exclusions()["files"]
    stale = sorted(set(left_out) - set(found))
    if stale:
        print(f"note: EXCLUDED.md names files this optax does not have: {stale}")
    return [f for f in found if f not in left_out]


def prepare(tmp: Path, mode: str, files: list[str]) -> None:
    """Copy ``files`` into ``tmp``, their optax imports rewritten in funcopt mode."""
    for rel in files:
        source = (OPTAX_DIR / rel).read_text()
        text = source
        if mode == "funcopt":
            text = shim.rewrite(source)
            allowed = shim.import_lines(source)
            old, new = source.splitlines(), text.splitlines()
            changed = {i + 1 for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b}
            if not changed <= allowed:
                raise SystemExit(f"{rel}: rewrite touched non-import lines {changed - allowed}")
        dest = tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
    (tmp / "pytest.ini").write_text("[pytest]\npython_files = *_test.py\n")


def run_pytest(mode: str, args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"optax_compat_{mode}_"))
    try:
        files = [f for f in test_files() if not args.files or any(s in f for s in args.files)]
        prepare(tmp, mode, files)
        results = tmp / "results.json"
        env = dict(os.environ)
        env.update(
            OPTAX_COMPAT_MODE=mode,
            OPTAX_COMPAT_RESULTS=str(results),
            OPTAX_COMPAT_ALL="1" if args.all else "0",
            JAX_PLATFORMS=env.get("JAX_PLATFORMS", "cpu"),
            XLA_FLAGS=env.get("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false"),
            PYTHONPATH=os.pathsep.join(
                [str(HERE), str(tmp / "_src"), args.funcopt_from, env.get("PYTHONPATH", "")]
            ),
        )
        cmd = [sys.executable, "-m", "pytest", "-c", str(tmp / "pytest.ini")]
        cmd += ["--rootdir", str(tmp), "-p", "no:cacheprovider", "-p", "compat_plugin"]
        cmd += ["-q", "--no-header", "-rN", "--tb=no"]
        if args.n:
            cmd += ["-n", str(args.n)]
        if args.k:
            cmd += ["-k", args.k]
        cmd += [str(tmp / rel) for rel in files]
        start = time.time()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.time() - start
        if not results.exists():
            sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
            raise SystemExit(f"pytest ({mode}) wrote no results (exit {proc.returncode})")
        data = json.loads(results.read_text())
        left_out = Path(str(results) + ".deselected")
        data["slow"] = json.loads(left_out.read_text()) if left_out.exists() else []
        data["wall_s"] = wall
        if args.keep:
            print(f"kept {tmp}")
        return data
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


# --- summarising -----------------------------------------------------------------------

_NUMERIC = re.compile(
    r"Not equal to tolerance|Arrays are not|Mismatched elements|Max absolute difference"
    r"|not almost equal|Values are not equal|are not close"
)
_STRUCTURE = re.compile(
    r"structure|PyTreeDef|pytree|tree_util|NamedTuple|not subscriptable|has no attribute"
    r"|tuple index out of range|is not an instance of|unexpected type|Custom node type"
    r"|unhashable|not iterable|cannot unpack|too many values to unpack|not enough values"
    r"|KeyError|dtypes? (do not|don't) match|[Ss]hapes? (do not|don't) match|Found no values"
    r"|isinstance|Tuples differ|Lists differ",
)
_SIGNATURE = re.compile(
    r"unexpected keyword argument|required positional argument|positional arguments? but"
    r"|got multiple values for argument|required keyword-only argument"
)


def cause_of(record: dict) -> tuple[str, str]:
    """(group, detail) of one failed test."""
    c = record.get("cause") or {}
    kind, msg = c.get("type", "?"), c.get("message", "")
    text = c.get("text", msg)
    detail = f"{kind}: {msg}"
    if kind == "AssertionError" and _NUMERIC.search(text):
        return "numeric difference", _short(detail)
    if _SIGNATURE.search(msg):
        return "signature / keyword difference", _short(detail)
    if kind in ("AttributeError", "KeyError", "IndexError") or _STRUCTURE.search(text):
        return "state type / field / structure difference", _short(detail)
    return "other exception", _short(detail)


def _short(detail: str) -> str:
    detail = re.sub(r"0x[0-9a-f]+", "0x…", detail)
    detail = re.sub(r"\b\d+\.\d+(e[-+]?\d+)?\b", "N", detail)
    return detail[:150]


def outcomes(data: dict) -> dict[str, dict]:
    """nodeid -> {"outcome": passed|failed|skipped|excluded, "record": the failing one}."""
    tests: dict[str, dict] = {}
    for r in data["records"]:
        t = tests.setdefault(r["nodeid"], {"outcome": "passed", "record": None, "resolved": []})
        if r["when"] == "call":
            t["touched"] = r.get("touched")
            t["resolved"] = r.get("resolved", [])
            t["duration"] = r["duration"]
            t["cpu"] = r.get("cpu", 0.0)
        if r["outcome"] == "failed" and t["outcome"] != "failed":
            t["outcome"], t["record"] = "failed", r
        elif r["outcome"] == "skipped" and t["outcome"] == "passed":
            excluded = r.get("skip_reason", "").startswith("Skipped: excluded:")
            t["outcome"] = "excluded" if excluded else "skipped"
    return tests


def summary(data: dict, mode: str) -> dict:
    tests = outcomes(data)
    counts = collections.Counter(t["outcome"] for t in tests.values())
    failures = {n: t for n, t in tests.items() if t["outcome"] == "failed"}
    known = {n for n in failures if shim.matching(n, "differences") is not None}
    out = {
        "mode": mode,
        "tests": len(tests) + len(data["slow"]),
        "run": len(tests),
        "passed": counts["passed"],
        "failed": counts["failed"],
        "failed_known_difference": len(known),
        "skipped": counts["skipped"],
        "excluded": counts["excluded"],
        "slow_not_run": len(data["slow"]),
        "collection_errors": data["collect_errors"],
        "wall_s": round(data["wall_s"], 1),
    }
    if mode == "funcopt":
        passed = [t for t in tests.values() if t["outcome"] == "passed"]
        out["passed_no_funcopt_code"] = sum(t.get("touched") is False for t in passed)
        out["passed_with_optax_fallback"] = sum(
            any(r.startswith("optax:") for r in t["resolved"]) for t in passed
        )
        fallback = collections.Counter(
            r.split(":", 1)[1] for t in tests.values() for r in t["resolved"] if r[:6] == "optax:"
        )
        out["optax_fallback_names"] = dict(fallback.most_common())
    per_file: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    seconds: collections.Counter = collections.Counter()
    for n, t in tests.items():
        f = n.split("::")[0]
        per_file[f][t["outcome"]] += 1
        seconds[f] += t.get("cpu", 0.0)
    out["per_file"] = {f: dict(c) for f, c in sorted(per_file.items())}
    out["seconds_per_file"] = {f: round(s, 1) for f, s in seconds.most_common()}
    out["per_test"] = {
        n: [t["outcome"], round(t.get("cpu", 0.0), 2), t.get("touched"), t["resolved"]]
        for n, t in sorted(tests.items())
    }
    out["failures"] = {
        n: {
            "group": "known difference" if n in known else g,
            "detail": d,
            "difference": shim.matching(n, "differences"),
            **(t["record"].get("cause") or {}),
        }
        for n, t in sorted(failures.items())
        for g, d in [cause_of(t["record"])]
    }
    return out


def print_report(s: dict, baseline: dict | None) -> None:
    name = "funcopt" if s["mode"] == "funcopt" else "optax itself (baseline)"
    print(
        f"\n== {name}: {s['tests']} tests: {s['passed']} passed, {s['failed']} failed "
        f"({s['failed_known_difference']} known differences), {s['skipped']} skipped by "
        f"optax's tests, {s['excluded']} excluded, {s['slow_not_run']} slow not run; "
        f"{len(s['collection_errors'])} collection errors; {s['wall_s']} s"
    )
    for e in s["collection_errors"]:
        print(f"   collection error {e['nodeid']}: {e['error'].strip().splitlines()[-1]}")
    if s["mode"] == "funcopt":
        print(
            f"   of the passed, {s['passed_with_optax_fallback']} also used optax's own "
            f"object for a name funcopt lacks, {s['passed_no_funcopt_code']} ran no funcopt code"
        )
    top = list(s["seconds_per_file"].items())[:4]
    print(
        "   most expensive files (CPU seconds of their tests): "
        + ", ".join(f"{f} {t}" for f, t in top)
    )
    if not s["failures"]:
        return
    groups: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for f in s["failures"].values():
        key = f["difference"] if f["group"] == "known difference" else f["detail"]
        groups[f["group"]][key[:150]] += 1
    print("   failures by cause:")
    for g, c in sorted(
        groups.items(), key=lambda kv: (kv[0] == "known difference", -sum(kv[1].values()))
    ):
        print(f"   {sum(c.values()):5d}  {g}")
        for detail, n in c.most_common(15):
            print(f"   {n:9d}  {detail}")
        if len(c) > 15:
            print(f"   {'':9s}  ... {len(c) - 15} more")
    if baseline:
        both = sorted(set(s["failures"]) & set(baseline["failures"]))
        print(f"   {len(both)} of these also fail on optax itself: {both}")


def read_floor() -> int:
    return int(next(ln for ln in FLOOR.read_text().splitlines() if ln and ln[0] != "#"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--check", action="store_true", help="fail below the floor in FLOOR")
    p.add_argument("--all", action="store_true", help="also run EXCLUDED.md's slow tests")
    p.add_argument("--baseline", action="store_true", help="also run against optax itself")
    p.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-n", type=int, default=2, help="pytest-xdist workers (0: none)")
    p.add_argument("--json", help="write the summaries (and every failure) to this file")
    p.add_argument("-k", help="pytest -k expression")
    p.add_argument("--files", nargs="*", help="only the test files containing one of these")
    p.add_argument(
        "--funcopt-from",
        default=str(REPO),
        help="directory holding the funcopt package to test (default: this checkout)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = p.parse_args(argv)
    if args.check and (args.all or args.k or args.files or args.baseline_only):
        p.error("--check is for the default selection (no --all, -k or --files)")
    missing = check_requirements()
    if missing:
        raise SystemExit(
            f"missing packages for optax's tests: {', '.join(missing)} (pip install -e '.[dev]')"
        )
    if args.baseline_only:
        result = {"optax": summary(run_pytest("optax", args), "optax")}
        print_report(result["optax"], None)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 0
    result = {"funcopt": summary(run_pytest("funcopt", args), "funcopt")}
    if args.baseline:
        result["optax"] = summary(run_pytest("optax", args), "optax")
        print_report(result["optax"], None)
    print_report(result["funcopt"], result.get("optax"))
    print(f"\n{len(shim.exclusions()['files'])} files excluded: see tests/optax_compat/EXCLUDED.md")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.check:
        floor, passed = read_floor(), result["funcopt"]["passed"]
        if passed < floor or result["funcopt"]["collection_errors"]:
            print(f"FAIL: {passed} of optax's tests pass against funcopt, the floor is {floor}")
            return 1
        print(f"ok: {passed} of optax's tests pass against funcopt (floor {floor})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
