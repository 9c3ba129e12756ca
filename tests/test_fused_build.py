"""Building the one-pass Adam kernel on first use: one library per cache, safe when
processes and threads ask for it at once, and off with FUNCOPT_FUSED=0."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None,
    reason="no C++ compiler on this machine: the kernel cannot be built",
)


BUILD = textwrap.dedent(
    """
    import concurrent.futures, funcopt
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # threads tracing steps at once
        found = set(pool.map(lambda _: funcopt.fused_adam_available(), range(4)))
    print(*found, funcopt.fused._load())
    """
)


def test_kernel_is_built_once_into_the_cache(tmp_path):
    """Two processes building into an empty cache at once (as pytest workers do), each with
    four threads asking for it, all get a working kernel, from one library, with no
    half-written files left; FUNCOPT_FUSED=0 turns it off."""
    env = {**os.environ, "FUNCOPT_CACHE_DIR": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen([sys.executable, "-c", BUILD], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all(o.split() == ["True", "None"] for o in outs), outs
    assert [f.suffix for f in tmp_path.iterdir()] == [".so"], list(tmp_path.iterdir())
    built = next(tmp_path.iterdir()).stat().st_mtime_ns
    again = subprocess.run([sys.executable, "-c", BUILD], env=env, capture_output=True, text=True)
    assert again.stdout.split() == ["True", "None"]
    assert next(tmp_path.iterdir()).stat().st_mtime_ns == built  # reused, not rebuilt
    off = subprocess.run(
        [sys.executable, "-c", BUILD],
        env={**env, "FUNCOPT_FUSED": "0"},
        capture_output=True,
        text=True,
    )
    assert off.stdout.startswith("False turned off by FUNCOPT_FUSED=0"), off.stdout
