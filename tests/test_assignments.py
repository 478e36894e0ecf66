"""The nbgrader round trip: release the notebooks to students, autograde a solution, a stub and
typical wrong answers (in a temporary course directory, smoke mode)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from dynacppo_lite import course

pytestmark = pytest.mark.slow
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

WRONG_GAE = '''def my_gae(rewards, values, next_values, terminated, truncated, *, gamma, lam):
    adv, last = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        done = terminated[t] or truncated[t]  # a time limit treated as a termination
        delta = rewards[t] + gamma * next_values[t] * (1 - done) - values[t]
        last = delta + gamma * lam * (1 - done) * last
        adv[t] = last
    return adv
'''
WRONG_ESTEP = '''def estep_case(adv_r, adv_c, *, cost_margin, kl_budget):
    a, c = adv_r - adv_r.mean(), adv_c - adv_c.mean()
    n = len(a)
    radius = np.sqrt(2 * n * kl_budget)
    if -radius * np.linalg.norm(c) > n * cost_margin:  # only the trust region: no cost line
        return "infeasible"
    return "unconstrained"
'''


def solution_lines(nb: nbformat.NotebookNode) -> list[str]:
    """The code between the solution markers of every solution cell (non-trivial lines)."""
    out = []
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            body = re.search(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, flags=re.S)
            assert body, "a solution cell without its markers"
            out += [line.strip() for line in body.group(1).splitlines() if len(line.strip()) > 12]
    return out


def with_solution(release: Path, code: str, out: Path) -> Path:
    nb = nbformat.read(release, as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = code
    nbformat.write(nb, out)
    return out


@pytest.mark.parametrize("name", course.assignment_names())
def test_every_exercise_has_a_solution_and_a_hidden_graded_test(name: str) -> None:
    """What nbgrader's generate_assignment strips, on all six notebooks (in-process)."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(graded) == 1 and graded[0].metadata["nbgrader"]["locked"]
    assert "### BEGIN HIDDEN TESTS" in graded[0].source and "check_" in graded[0].source
    lines = solution_lines(nb)
    assert lines
    stripped, _ = ClearSolutions().preprocess(nb, {})
    stripped, _ = ClearHiddenTests().preprocess(stripped, {})
    text = "\n".join(c.source for c in stripped.cells)
    assert "raise NotImplementedError()" in text and "check_" in text
    assert not [line for line in lines if line in text]
    assert "### BEGIN HIDDEN TESTS" not in text


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = course.build_course(tmp_path_factory.mktemp("course"), ["02", "03"])
    released = course.release(root)
    gae, estep = "02_dual_advantages", "03_estep_geometry"
    work = tmp_path_factory.mktemp("work")
    course.submit(root, gae, "source", root / "source" / gae / f"{gae}.ipynb")
    course.submit(root, gae, "stub", root / "release" / gae / f"{gae}.ipynb")
    course.submit(root, gae, "wrong", with_solution(root / "release" / gae / f"{gae}.ipynb",
                                                     WRONG_GAE, work / "gae.ipynb"))
    course.submit(root, estep, "wrong", with_solution(root / "release" / estep / f"{estep}.ipynb",
                                                      WRONG_ESTEP, work / "estep.ipynb"))
    tables = {gae: course.grade(root, gae), estep: course.grade(root, estep)}
    print("\n" + "\n\n".join(f"{a}\n{course.format_table(t)}" for a, t in tables.items()))
    return root, released, tables


def test_the_release_contains_no_solution_text(graded) -> None:
    root, released, _ = graded
    assert sorted(p.parent.name for p in released) == ["02_dual_advantages", "03_estep_geometry"]
    for path in released:
        source = nbformat.read(root / "source" / path.parent.name / path.name, as_version=4)
        text = path.read_text()
        assert not [line for line in solution_lines(source) if json.dumps(line)[1:-1] in text]
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        assert "raise NotImplementedError()" in text


def test_autograding_gives_the_source_full_marks_and_the_stub_zero(graded) -> None:
    _, _, tables = graded
    scores = {r["student"]: (r["score"], r["max_score"]) for r in tables["02_dual_advantages"]}
    assert scores["source"] == (1.0, 1.0)
    assert scores["stub"] == (0.0, 1.0)


@pytest.mark.parametrize(("assignment", "hint"), [
    ("02_dual_advantages", "You zeroed the next value as if the episode had terminated"),
    ("03_estep_geometry", "You never return"),
])
def test_a_typical_wrong_answer_loses_the_points_with_its_hint(graded, assignment, hint) -> None:
    root, _, tables = graded
    wrong = next(r for r in tables[assignment] if r["student"] == "wrong")
    assert wrong["score"] == 0.0 and wrong["max_score"] == 1.0
    feedback = course.feedback_text(root, assignment, "wrong")
    assert "CheckFailed" in feedback and hint.replace('"', "&quot;") in feedback.replace("&#34;", "&quot;")
