"""Every script in examples/ runs, at small size, in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# script -> (small-size arguments, a line its output must contain, files it must write)
CASES = {
    "quickstart.py": (["--steps", "30"], "final loss", []),
    "chapter_figures.py": (
        ["--small", "--out", "figs"],
        "race.gif",
        ["figs/sweep-and-effective-step.png", "figs/race.gif"],
    ),
    "mlp_digits.py": (
        ["--steps", "5", "--out", "mlp.png"],
        "max |θ_funcopt − θ_torch|",
        ["mlp.png"],
    ),
    "flax_nnx.py": (["--steps", "5"], "after 5 steps", []),
    "lr_sweep.py": (["--steps", "5", "--out", "sweep.png"], "best learning rate", ["sweep.png"]),
    "gradient_accumulation.py": (["--steps", "3"], "funcopt.MultiSteps(adam, 4) vs one batch", []),
    "sharded_training.py": (["--steps", "3"], "mesh {'data': 4, 'model': 2}", []),
}


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs(script, tmp_path):
    args, expect, files = CASES[script]
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(EXAMPLES.parent)}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert expect in proc.stdout, proc.stdout
    for f in files:
        assert (tmp_path / f).stat().st_size > 1000, f
