"""Course tooling: ``python -m dynacppo_lite check`` for graders without Jupyter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from dynacppo_lite.cli import main

RIGHT_GAE = '''
import numpy as np

def my_gae(rewards, values, next_values, terminated, truncated, *, gamma, lam):
    adv, last = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * (0.0 if terminated[t] else next_values[t]) - values[t]
        if terminated[t] or truncated[t]:
            last = 0.0
        last = delta + gamma * lam * last
        adv[t] = last
    return adv
'''
TRUNCATION_AS_TERMINATION = RIGHT_GAE.replace("(0.0 if terminated[t] else next_values[t])",
                                              "(0.0 if terminated[t] or truncated[t] else next_values[t])")
VIA_LIBRARY = "from dynacppo_lite.gae import gae as my_gae\n"


@pytest.mark.parametrize(("code", "rc", "expect"), [
    (RIGHT_GAE, 0, "PASS: check_gae: all 5 cases match"),
    (TRUNCATION_AS_TERMINATION, 1, "Hint: a *truncated* step"),
    (VIA_LIBRARY, 1, "the library's own answer"),
    ("def my_gae(:\n", 1, "importing"),
    ("def other(x):\n    return x\ndef another(y):\n    return y\n", 1, "defines no function 'my_gae'"),
])
def test_check_command_grades_a_file(tmp_path, capsys, code, rc, expect) -> None:
    path = tmp_path / "submission.py"
    path.write_text(textwrap.dedent(code))
    assert main(["check", "gae", str(path)]) == rc
    assert expect in capsys.readouterr().out


def test_check_command_finds_the_only_function_or_the_named_one(tmp_path, capsys) -> None:
    path = tmp_path / "s.py"
    path.write_text(RIGHT_GAE.replace("def my_gae", "def advantages") + "\n\ndef helper(x):\n    return x\n")
    assert main(["check", "gae", str(path), "--function", "advantages"]) == 0
    only = tmp_path / "only.py"
    only.write_text(RIGHT_GAE.replace("def my_gae", "def gae_by_me"))
    assert main(["check", "gae", str(only)]) == 0


def test_check_command_exits_1_from_the_shell(tmp_path) -> None:
    path = tmp_path / "wrong.py"
    path.write_text(TRUNCATION_AS_TERMINATION)
    out = subprocess.run([sys.executable, "-m", "dynacppo_lite", "check", "gae", str(path)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1 and out.stdout.startswith("FAIL: check_gae")
