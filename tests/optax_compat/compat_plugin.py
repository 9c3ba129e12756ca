"""pytest plugin loaded by run.py (``-p compat_plugin``) for the optax compatibility run.

In each process it: skips the tests ``EXCLUDED.md`` excludes, with their reason, and
leaves out its slow tests unless ``$OPTAX_COMPAT_ALL`` is 1; notes
whether a test ran any funcopt code (a profiler hook until the first funcopt frame) and
which names the proxies resolved to funcopt's or to optax's own during the test, and
records each failure's exception (type, first line, the innermost frames). The
controlling process writes every report to the JSON file named by
``$OPTAX_COMPAT_RESULTS``.

Not a test file and no conftest: the repository's own ``pytest`` run never loads it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback

import pytest
import shim

FUNCOPT_DIR = os.path.dirname(os.path.abspath(importlib.util.find_spec("funcopt").origin)) + os.sep
PROFILE = os.environ.get("OPTAX_COMPAT_MODE", "funcopt") == "funcopt"

_records: list[dict] = []
_collect_errors: list[dict] = []
_started = time.time()
RUN_SLOW = os.environ.get("OPTAX_COMPAT_ALL") == "1"


def pytest_collection_modifyitems(config, items):
    slow = []
    for item in items:
        params = getattr(getattr(item, "obj", None), "__x_params_repr__", "")
        reason = shim.matching(item.nodeid, "tests", params)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"excluded: {reason}"))
        elif not RUN_SLOW and shim.matching(item.nodeid, "slow", params) is not None:
            slow.append(item)
    if slow:
        config.hook.pytest_deselected(items=slow)
        left_out = {id(item) for item in slow}
        items[:] = [item for item in items if id(item) not in left_out]
    path = os.environ.get("OPTAX_COMPAT_RESULTS")
    if path:  # every process collects the same tests: the last to write wins
        with open(path + ".deselected", "w") as f:
            json.dump(sorted(item.nodeid for item in slow), f)


class _Touch:
    def __init__(self):
        self.touched = False

    def __call__(self, frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(FUNCOPT_DIR):
            self.touched = True
            sys.setprofile(None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    shim.RESOLVED.clear()
    touch = _Touch()
    cpu = time.process_time()
    if PROFILE:
        sys.setprofile(touch)
    try:
        yield
    finally:
        sys.setprofile(None)
        item._compat_cpu = time.process_time() - cpu
        item._compat_touched = touch.touched or any(k == "funcopt" for k, _ in shim.RESOLVED)
        item._compat_resolved = sorted({f"{k}:{n}" for k, n in shim.RESOLVED})


def _frame(fs) -> str:
    path = fs.filename
    for marker in ("site-packages" + os.sep, os.sep + "funcopt" + os.sep):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.endswith("funcopt" + os.sep):
                path = "funcopt/" + path
            break
    else:
        path = os.path.basename(path)
    return f"{path}:{fs.lineno} {fs.name}"


def describe(exc: BaseException) -> dict:
    """What run.py groups a failure by."""
    info: dict = {"type": type(exc).__name__}
    text = str(exc).strip()
    info["message"] = text.splitlines()[0][:300] if text else ""
    info["text"] = text[:2000]
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        info["innermost"] = _frame(frames[-1])
        ours = [f for f in frames if f.filename.startswith(FUNCOPT_DIR)]
        if ours:
            info["funcopt_frame"] = _frame(ours[-1])
        tests = [f for f in frames if f.filename.endswith("_test.py")]
        if tests:
            info["test_frame"] = _frame(tests[-1])
        info["frames"] = [_frame(f) for f in frames[-8:]]
    return info


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        report.user_properties.append(("touched", getattr(item, "_compat_touched", None)))
        report.user_properties.append(("resolved", getattr(item, "_compat_resolved", [])))
        report.user_properties.append(("cpu", getattr(item, "_compat_cpu", 0.0)))
    if report.failed and call.excinfo is not None:
        report.user_properties.append(("cause", describe(call.excinfo.value)))


def pytest_runtest_logreport(report):
    props = dict(report.user_properties)
    record = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "duration": report.duration,
    }
    if report.skipped and isinstance(report.longrepr, tuple):
        record["skip_reason"] = str(report.longrepr[2])
    if report.failed:
        record["cause"] = props.get("cause") or {
            "type": "?",
            "message": (getattr(report.longrepr, "reprcrash", None) or "").__str__()[:300],
        }
    if report.when == "call":
        record["touched"] = props.get("touched")
        record["resolved"] = props.get("resolved", [])
        record["cpu"] = props.get("cpu", 0.0)
    _records.append(record)


def pytest_collectreport(report):
    if report.failed:
        _collect_errors.append({"nodeid": report.nodeid, "error": str(report.longrepr)[-3000:]})


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller gets its reports and writes the file
    path = os.environ.get("OPTAX_COMPAT_RESULTS")
    if path:
        with open(path, "w") as f:
            json.dump(
                {
                    "records": _records,
                    "collect_errors": _collect_errors,
                    "wall_s": time.time() - _started,
                    "exitstatus": int(exitstatus),
                },
                f,
            )
