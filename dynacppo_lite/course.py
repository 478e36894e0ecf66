"""Course assignments with nbgrader: release the notebooks to students, autograde submissions.

Each notebook is one nbgrader assignment (named after it, e.g. ``02_dual_advantages``). Its
exercise cell carries nbgrader metadata with the reference solution between ``### BEGIN
SOLUTION`` and ``### END SOLUTION``; a hidden, locked test cell (``### BEGIN HIDDEN TESTS``) calls
the exercise's checker, which raises with its hint on a wrong answer. The layout is nbgrader's::

    course/
      nbgrader_config.py                     written by build_course
      source/<name>/<name>.ipynb             the notebooks, with solutions
      release/<name>/<name>.ipynb            students' copies (release)
      submitted/<student>/<name>/<name>.ipynb   what they hand in
      autograded/, feedback/, gradebook.db   autograde and feedback

Commands (``make assignments`` runs the first)::

    python -m dynacppo_lite assignments --course course [NOTEBOOK ...]
    python -m dynacppo_lite grade --course course ASSIGNMENT

What a course must withhold: the ``source/`` folder and ``gradebook.db`` (the solutions and the
hidden tests). Nothing else: the checkers' reference is the library's own code, which students
have installed anyway; a solution that hands it back (calls ``dynacppo_lite.gae`` for the GAE
exercise, a ``reference_*``) is refused by the checker.

Autograding executes whole notebooks; ``grade`` sets ``DYNACPPO_SMOKE=1`` (unless ``smoke=False``)
so notebook 05 trains on the toy task (seconds, not its full mode's 1M-step runs): the exercises
do not depend on the mode.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dynacppo_lite

PACKAGE_ROOT = Path(dynacppo_lite.__file__).resolve().parents[1]
NOTEBOOKS_DIR = PACKAGE_ROOT / "notebooks"

CONFIG = '''\
# nbgrader configuration of the dynacppo_lite course (written by dynacppo_lite.course.build_course).
c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = "dynacppo_lite"
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
# A notebook's smoke-mode training cell takes tens of seconds on a small machine.
c.Execute.timeout = 900
c.Execute.allow_errors = True
'''


class CourseError(RuntimeError):
    """An nbgrader step failed; the message carries the end of its output."""


def assignment_names(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))


def build_course(course_dir: str | Path, assignments: list[str] | None = None, *,
                 notebooks_dir: str | Path = NOTEBOOKS_DIR) -> Path:
    """Create (or refresh) ``course_dir`` with ``source/<name>/<name>.ipynb`` per notebook and its
    ``nbgrader_config.py``; ``assignments`` are notebook names or number prefixes ("02")."""
    course = Path(course_dir).resolve()
    names = resolve_assignments(assignments, notebooks_dir)
    for name in names:
        dest = course / "source" / name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(notebooks_dir) / f"{name}.ipynb", dest / f"{name}.ipynb")
    (course / "nbgrader_config.py").write_text(CONFIG.format(root=str(course)))
    return course


def resolve_assignments(assignments: list[str] | None,
                        notebooks_dir: str | Path = NOTEBOOKS_DIR) -> list[str]:
    names = assignment_names(Path(notebooks_dir))
    if not assignments:
        return names
    out = []
    for item in assignments:
        match = [n for n in names if n == item or n.startswith(f"{item}_") or n == Path(item).stem]
        if len(match) != 1:
            raise ValueError(f"unknown assignment {item!r}: one of {', '.join(names)} (or its number)")
        out.append(match[0])
    return out


def nbgrader(course_dir: str | Path, *args: str, smoke: bool = True) -> str:
    """Run ``nbgrader ARGS`` in ``course_dir`` (its config applies); returns the output.

    The kernels that execute notebooks import this copy of dynacppo_lite (``PYTHONPATH``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    # nbgrader runs `alembic` (its gradebook migrations) from PATH: this interpreter's scripts.
    env["PATH"] = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), env.get("PATH")]))
    if smoke:
        env["DYNACPPO_SMOKE"] = "1"
    out = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course_dir, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        raise CourseError(f"nbgrader {' '.join(args)} failed:\n{tail}")
    return out.stdout + out.stderr


def release(course_dir: str | Path, assignments: list[str] | None = None) -> list[Path]:
    """``nbgrader generate_assignment`` for each assignment: the students' copies, solutions
    replaced by a stub raising NotImplementedError and hidden tests removed."""
    course = Path(course_dir).resolve()
    names = resolve_assignments(assignments) if assignments else sorted(
        p.name for p in (course / "source").iterdir() if p.is_dir())
    paths = []
    for name in names:
        nbgrader(course, "generate_assignment", name, "--force")
        paths += sorted((course / "release" / name).glob("*.ipynb"))
    return paths


def submit(course_dir: str | Path, assignment: str, student: str, notebook: str | Path) -> Path:
    """Place a student's notebook where nbgrader expects a submission."""
    dest = Path(course_dir) / "submitted" / student / assignment
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{assignment}.ipynb"
    shutil.copy2(notebook, target)
    return target


def grade(course_dir: str | Path, assignment: str, *, smoke: bool = True,
          feedback: bool = True) -> list[dict]:
    """``nbgrader autograde`` every submission of ``assignment`` (and ``generate_feedback``);
    returns the grade table: one dict per student with ``score``, ``max_score`` and, per graded
    cell, its points."""
    course = Path(course_dir).resolve()
    nbgrader(course, "autograde", assignment, "--force", "--Autograde.create_student=True", smoke=smoke)
    if feedback:
        nbgrader(course, "generate_feedback", assignment, "--force")
    return grade_table(course, assignment)


def grade_table(course_dir: str | Path, assignment: str) -> list[dict]:
    from nbgrader.api import Gradebook

    course = Path(course_dir).resolve()
    rows = []
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for sub in gb.assignment_submissions(assignment):
            row = {"student": sub.student_id, "score": float(sub.score), "max_score": float(sub.max_score)}
            for nb in sub.notebooks:
                for g in nb.grades:
                    row[g.name] = float(g.score)
            rows.append(row)
    return sorted(rows, key=lambda r: r["student"])


def feedback_text(course_dir: str | Path, assignment: str, student: str) -> str:
    """The student's feedback (HTML) as nbgrader wrote it."""
    folder = Path(course_dir) / "feedback" / student / assignment
    return "\n".join(p.read_text() for p in sorted(folder.glob("*.html")))


def format_table(rows: list[dict]) -> str:
    """A markdown grade table."""
    if not rows:
        return "(no submissions)"
    cells = sorted({k for r in rows for k in r} - {"student", "score", "max_score"})
    head = ["student", *cells, "score"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [r["student"], *(f"{r.get(c, float('nan')):g}" for c in cells),
                f"{r['score']:g} / {r['max_score']:g}"]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)
