"""The training loop stays one readable loop: its size, no algorithm names in its cost handling,
and the same steps, in the same order, in train.py, DESIGN.md and notebook 05."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from dynacppo_lite.config import ALGOS, COST_CONTROLS

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "dynacppo_lite" / "train.py"


def _trainer_method(name: str) -> ast.FunctionDef:
    tree = ast.parse(TRAIN.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    return next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name)


def test_train_py_is_the_loop_and_the_iteration_reads_on_one_screen() -> None:
    assert len(TRAIN.read_text().splitlines()) < 500
    it = _trainer_method("iteration")
    assert it.end_lineno - it.lineno + 1 < 80


def test_the_loop_tests_no_algorithm_or_control_name() -> None:
    """Cost handling goes through ``CostControl``; the one name the loop tests is the Dyna half's."""
    names = (set(ALGOS) | set(COST_CONTROLS)) - {"auto"}  # "auto" is also a device
    tested = [ast.unparse(node) for node in ast.walk(ast.parse(TRAIN.read_text()))
              if isinstance(node, ast.Compare)
              and any(isinstance(c, ast.Constant) and c.value in names
                      for c in [node.left, *node.comparators])]
    assert tested == ["cfg.algo == 'dyna-cppo'"], tested


def _steps_of_train_py() -> list[str]:
    doc = ast.get_docstring(ast.parse(TRAIN.read_text()))
    block = doc.split("::", 1)[1].split("\n\n", 2)[1]
    return [m.group(1) for line in block.splitlines() if (m := re.match(r"    (\S.*?)(?:\s{2,}|$)", line))]


def test_design_and_notebook_05_name_the_loops_steps_in_its_order() -> None:
    steps = _steps_of_train_py()
    assert steps[:3] == ["schedule", "collect", "cost"] and steps[-1] == "log", steps
    design = (ROOT / "DESIGN.md").read_text()
    section = design.split("## One iteration", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^\d+\. \*\*(.+?)\*\*", section, flags=re.M) == steps
    notebook = (ROOT / "notebooks" / "05_training_runs.py").read_text()
    sentence = re.search(r"\(DESIGN\.md, \"One iteration\"\): (.*?)\. Here", notebook, flags=re.S)
    said = [re.sub(r"\s*\(.*", "", re.sub(r":.*", "", part)).strip()
            for part in re.split(r",\s+(?![^()\[\]]*[)\]])", re.sub(r"\n# ", " ", sentence.group(1)))]
    assert said == steps, said
    # the order of the code itself: each step's call, in this order, inside Trainer.iteration
    body = ast.unparse(_trainer_method("iteration"))
    calls = ["self._schedule(", "self.collector.collect(", "self.cost.update(",
             "self.cost_control.decide(", "self._real_batch(", "self.dyna.update(",
             "update(batch", "self.dyna.rounds(", "update_critics("]
    where = [body.index(call) for call in calls]
    assert where == sorted(where)
