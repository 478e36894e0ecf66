"""The web app's demo runs under a class: several visitors' kernels arrive at once.

Every kernel of ``make app`` on a fresh clone (no ``runs/``) calls ``widgets.demo_runs`` on one
shared directory and then reads it with the run browser. Here several processes do exactly
that at the same time (staggered by a fraction of a second, as a class opening one page), and
every read must see each run whole: iterations 0..n-1, each once.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

STEPS = 2_000  # 4 iterations of 500 steps per run: short, still long enough to overlap
ITERS = STEPS // 500
VISITORS = 4
READS = 12


def _visitor(log_dir: str, delay: float, out: mp.Queue) -> None:
    """One kernel's worth: ``demo_runs``, then the run browser's reads, a few times over."""
    import torch

    from dynacppo_lite.runlog import read_progress
    from dynacppo_lite.widgets import RunBrowser, demo_runs, find_runs

    torch.set_num_threads(1)
    time.sleep(delay)
    problems: list[str] = []
    try:
        runs_dir = demo_runs(log_dir, steps=STEPS)
        RunBrowser(runs_dir)  # the app's own reads: scan, select all, draw
        for _ in range(READS):
            runs = find_runs(runs_dir)
            if len(runs) != 2:
                problems.append(f"{len(runs)} runs found, not 2")
            for run in runs:
                iters = read_progress(run)["iteration"].tolist()
                if iters != list(range(ITERS)):
                    problems.append(f"{run.name}: iterations {iters}")
            time.sleep(0.25)
    except Exception as exc:  # a half-deleted run raises in pandas: that is a failure too
        problems.append(f"{type(exc).__name__}: {exc}")
    out.put(problems)


def test_concurrent_visitors_never_read_a_corrupted_demo_run(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")  # a fresh interpreter per visitor, as Voila's kernels are
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_visitor, args=(str(tmp_path / "demo"), 0.4 * k, out))
             for k in range(VISITORS)]
    for p in procs:
        p.start()
    reports = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    bad = sorted({line for report in reports for line in report})
    print(f"\n{VISITORS} visitors x {READS} reads: {len(bad)} distinct problems")
    assert not bad, "\n".join(bad[:20])


def test_demo_runs_are_made_once_and_reused(tmp_path: Path) -> None:
    from dynacppo_lite.widgets import demo_runs

    first = demo_runs(tmp_path / "demo", steps=500, algos=("cppo",))
    made = (first / "cppo" / "progress.csv").stat().st_mtime_ns
    assert demo_runs(tmp_path / "demo", steps=500, algos=("cppo",)) == first
    assert (first / "cppo" / "progress.csv").stat().st_mtime_ns == made  # read, not rewritten
    assert not [p.name for p in tmp_path.iterdir() if p.name not in ("demo", ".demo.lock")]


def test_demo_runs_with_other_settings_replace_the_set(tmp_path: Path) -> None:
    from dynacppo_lite.runlog import read_progress
    from dynacppo_lite.widgets import demo_runs

    demo_runs(tmp_path / "demo", steps=500, algos=("cppo",))
    again = demo_runs(tmp_path / "demo", steps=1_000, algos=("cppo",))
    assert read_progress(again / "cppo")["iteration"].tolist() == [0, 1]


if __name__ == "__main__":  # pragma: no cover - a manual run
    pytest.main([__file__, "-v", "-s"])


def test_bench_app_waits_for_a_warm_pool_and_says_when_it_never_warms():
    """``bench app --pool N`` measures a class that arrives after the pool is warm: it waits for
    N kernels and an idle server tree, and gives up with a message (the first pool measurement
    let the class in while the pool was still starting)."""
    import subprocess

    from dynacppo_lite.bench.app import tree_cpu_s, wait_pool_warm

    idle = subprocess.Popen(["sleep", "30"])
    try:
        assert tree_cpu_s(idle.pid) < 0.5
        assert wait_pool_warm(idle.pid, 0, window_s=0.5) < 5  # no pool, idle: at once
        with pytest.raises(RuntimeError, match="pool of 1 kernels was not warm"):
            wait_pool_warm(idle.pid, 1, timeout=1.0, window_s=0.5)  # a kernel that never comes
    finally:
        idle.kill()
        idle.wait()
