"""The notebooks as files: paired with their py:percent source, committed without outputs, built
to the course's shape. (Running them is nbval's job: ``pytest notebooks --nbval-lax``.)"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = [
    "01_dynamics_learning",
    "02_dual_advantages",
    "03_estep_geometry",
    "04_mstep_clipping",
    "05_training_runs",
    "06_interactive_explorer",
]
CHECKERS = {
    "01_dynamics_learning": "check_one_step_error",
    "02_dual_advantages": "check_gae",
    "03_estep_geometry": "check_estep_case",
    "04_mstep_clipping": "check_mstep_gradient",
    "05_training_runs": "check_run_summary",
    "06_interactive_explorer": "check_smoothing",
}


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, dict]]:
    """What must agree between the pair: type, source and metadata (tags) of every cell."""
    return [(c.cell_type, c.source, dict(c.metadata)) for c in nb.cells]


def test_the_six_notebooks_and_nothing_unpaired() -> None:
    py = sorted(p.stem for p in NOTEBOOKS.glob("*.py"))
    ipynb = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert py == EXPECTED
    assert ipynb == EXPECTED, "every notebooks/*.py needs its paired .ipynb (jupytext --sync)"


def test_jupytext_config_pairs_ipynb_with_percent_scripts() -> None:
    toml = (NOTEBOOKS.parent / "jupytext.toml").read_text()
    assert 'formats = "ipynb,py:percent"' in toml


@pytest.mark.parametrize("name", EXPECTED)
def test_pair_in_sync(name: str) -> None:
    """The .ipynb holds exactly the cells jupytext builds from the .py (the source of truth).
    Fix a failure with ``jupytext --sync notebooks/<name>.py``."""
    from_py = jupytext.read(NOTEBOOKS / f"{name}.py")
    committed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    ours, theirs = _cells(from_py), _cells(committed)
    assert len(ours) == len(theirs), f"{name}: {len(theirs)} cells in the .ipynb, {len(ours)} in the .py"
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"{name}: cell {i} differs between the .py and the .ipynb"
    assert from_py.metadata.get("kernelspec") == committed.metadata.get("kernelspec")


@pytest.mark.parametrize("name", EXPECTED)
def test_ipynb_committed_without_outputs(name: str) -> None:
    raw = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    for i, cell in enumerate(raw["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{name}: cell {i} has outputs"
            assert cell.get("execution_count") is None, f"{name}: cell {i} has an execution count"


@pytest.mark.parametrize("name", EXPECTED)
def test_course_shape(name: str) -> None:
    """Opens with learning goals, one tagged parameters cell reading DYNACPPO_SMOKE, imports the
    library, ends with an exercise checked by its ``check_*``."""
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    assert nb.cells[0].cell_type == "markdown"
    assert "After this notebook you will be able to" in nb.cells[0].source
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert 'os.environ.get("DYNACPPO_SMOKE", "0") == "1"' in params[0].source
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "from dynacppo_lite" in code
    checker = CHECKERS[name]
    assert f"from dynacppo_lite.exercises import {checker}" in code
    last_code = [c for c in nb.cells if c.cell_type == "code"][-3:]
    assert any(f"{checker}(" in c.source for c in last_code), "the exercise comes last"
    solution = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert len(solution) == 1, "one nbgrader solution cell"
    assert "### BEGIN SOLUTION" in solution[0].source and "### END SOLUTION" in solution[0].source
    tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(tests) == 1 and f"{checker}(" in tests[0].source, "one graded cell calling the checker"
    assert tests[0].metadata["nbgrader"]["locked"] and "### BEGIN HIDDEN TESTS" in tests[0].source


@pytest.mark.parametrize("name", EXPECTED)
def test_lines_fit_except_cell_headers(name: str) -> None:
    """ruff skips E501 in notebooks/*.py because of the nbgrader metadata on `# %%` lines."""
    for i, line in enumerate((NOTEBOOKS / f"{name}.py").read_text().splitlines(), start=1):
        assert line.startswith("# %%") or len(line) <= 110, f"{name}.py:{i} is longer than 110"


@pytest.mark.parametrize("name", EXPECTED)
def test_figures_saved_in_full_mode_only(name: str) -> None:
    """Every write to figures/ (a ``figure_path(...)`` call) sits under ``if not SMOKE`` or in the
    ``else`` of ``if SMOKE``."""
    tree = ast.parse((NOTEBOOKS / f"{name}.py").read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def guarded(node: ast.AST) -> bool:
        while node in parents:
            parent = parents[node]
            if isinstance(parent, ast.If):
                test = ast.unparse(parent.test)
                if test == "not SMOKE" and node in parent.body:
                    return True
                if test == "SMOKE" and node in parent.orelse:
                    return True
            node = parent
        return False

    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id == "figure_path"]
    for call in calls:
        assert guarded(call), f"{name}: line {call.lineno} writes to figures/ in smoke mode"


def test_figures_command_runs_figures_regenerate(monkeypatch) -> None:
    from dynacppo_lite import cli, figures

    called = []
    monkeypatch.setattr(figures, "regenerate", lambda: called.append(True) or [Path("figures/x.png")])
    assert cli.main(["figures"]) == 0 and called


def test_figure_functions_draw_from_the_library(tmp_path) -> None:
    """The cheap figures of ``make figures`` build and save (the full set trains and is slow)."""
    from dynacppo_lite import figures

    for fn, name in ((figures.fig_estep_cases, "03.png"), (figures.fig_mstep, "04.png"),
                     (figures.fig_gae_perfect_critic, "02.png")):
        path = figures.save(fn(), name, tmp_path)
        assert path.is_file() and path.stat().st_size > 10_000


def test_coordinate_figure_draws_a_window_without_episode_ends_or_new_goals(tmp_path) -> None:
    """Notebook 01's arena picture starts where the next steps keep the arena as drawn; the
    whole figure builds in smoke mode."""
    import numpy as np

    from dynacppo_lite import figures
    from dynacppo_lite.bench.model import R2_POLICY, record_steps
    from dynacppo_lite.envs.coordinate_model import redrawn

    data = record_steps(R2_POLICY, 400, seed=0)
    stop = data.done | redrawn(data.spec, data.rows, data.next_rows)
    assert stop.any()  # a goal reached in 400 steps: the window has something to avoid
    t = figures.quiet_window(data, np.arange(400), 30)
    assert not stop[t:t + 30].any()
    with pytest.raises(ValueError, match="no 401 steps"):
        figures.quiet_window(data, np.arange(400), 401)
    path = figures.save(figures.fig_coordinate_model(smoke=True), "01.png", tmp_path)
    assert path.is_file() and path.stat().st_size > 10_000


def test_notebook05_full_mode_configs_match_the_bench_and_scale_out() -> None:
    """Full mode = the bench's 1-env settings and run names; more envs get their own names."""
    from dynacppo_lite.figures import training_configs

    one = training_configs(False, "runs", seed=3)
    assert [c.run_name for c in one] == [f"SafetyPointGoal1-v0_{a}_s3"
                                         for a in ("cppo", "ppo-lag", "dyna-cppo")]
    assert {(c.num_envs, c.total_steps, c.steps_per_iter) for c in one} == {(1, 1_000_000, 4_000)}
    many = training_configs(False, "runs", device="cuda", num_envs=16)
    assert all(c.num_envs == 16 and c.device == "cuda" and c.run_name.endswith("_s0_n16")
               for c in many)
    assert {c.num_envs for c in training_configs(True, "runs", num_envs=16)} == {1}  # smoke: toy
    with pytest.raises(ValueError, match="num_envs"):
        training_configs(False, "runs", num_envs=0)
