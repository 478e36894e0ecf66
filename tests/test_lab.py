"""The JupyterLab walkthrough: `make lab`'s command line, saves without outputs that reach both
halves of a pair, and widget layouts that keep every control visible in a narrow window."""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def make_lab(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "-s", "lab", *args], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return " ".join(line.strip().rstrip("\\") for line in out.splitlines() if line.strip())


def test_make_lab_roots_at_the_repo_in_smoke_mode_and_allows_root() -> None:
    line = make_lab()
    cmd = line[line.index("DYNACPPO_SMOKE="):]
    assert cmd.startswith("DYNACPPO_SMOKE=1 ")
    assert "jupyter lab" in cmd and "--config=jupyter_lab_config.py" in cmd
    assert re.search(rf'--ServerApp\.root_dir="?{re.escape(str(ROOT))}"?', cmd)
    assert ("--allow-root" in cmd) == (os.getuid() == 0)
    assert "notebooks/" not in cmd.split("jupyter lab", 1)[1].split("--")[0]  # not rooted there
    full = make_lab("FULL=1")
    assert full[full.index("DYNACPPO_SMOKE="):].startswith("DYNACPPO_SMOKE=0 ")


def lab_config() -> dict:
    class Config(dict):
        def __getattr__(self, key):
            return self.setdefault(key, Config())

        def __setattr__(self, key, value):
            self[key] = value

    cfg = Config()
    ns = runpy.run_path(str(ROOT / "jupyter_lab_config.py"), init_globals={"get_config": lambda: cfg})
    return {"config": cfg, "hook": ns["strip_outputs"]}


def test_a_save_in_lab_writes_both_halves_and_no_outputs(tmp_path) -> None:
    from jupytext.sync_contentsmanager import TextFileContentsManager

    lab = lab_config()
    assert lab["config"]["ContentsManager"]["pre_save_hook"] is lab["hook"]
    shutil.copy(ROOT / "jupytext.toml", tmp_path)
    (tmp_path / "notebooks").mkdir()
    name = "03_estep_geometry"
    for ext in (".py", ".ipynb"):
        shutil.copy(ROOT / "notebooks" / f"{name}{ext}", tmp_path / "notebooks")
    cm = TextFileContentsManager(root_dir=str(tmp_path))
    cm.pre_save_hook = lab["hook"]
    model = cm.get(f"notebooks/{name}.ipynb")
    code = [c for c in model["content"].cells if c.cell_type == "code"]
    code[0].outputs = [nbformat.v4.new_output("stream", text="ran in Lab")]
    code[0].execution_count = 4
    code[1].source += "\nedited_in_lab = True"
    cm.save(model, f"notebooks/{name}.ipynb")
    raw = json.loads((tmp_path / "notebooks" / f"{name}.ipynb").read_text())
    assert all(c["outputs"] == [] and c["execution_count"] is None
               for c in raw["cells"] if c["cell_type"] == "code")
    assert "edited_in_lab = True" in (tmp_path / "notebooks" / f"{name}.py").read_text()


def _px(value: str) -> int:
    return int(value.removesuffix("px"))


@pytest.mark.parametrize("kind", ["EStepExplorer", "MStepExplorer", "RunBrowser"])
def test_controls_keep_their_width_and_the_figure_wraps(kind, tmp_path) -> None:
    from dynacppo_lite import widgets as w

    explorer = w.RunBrowser(tmp_path) if kind == "RunBrowser" else getattr(w, kind)()
    box = explorer.widget
    controls, figure = box.children
    assert box.layout.flex_flow == "row wrap"
    assert controls.layout.flex == "0 0 auto" and _px(controls.layout.min_width) >= 380
    for control in controls.children:  # every control fits the column, its value readout included
        if control.layout.width:
            assert _px(control.layout.width) <= _px(controls.layout.min_width) - 10
    assert figure.layout.min_width == w.FIGURE_MIN_WIDTH and figure.layout.flex.startswith("1 1")
    assert explorer.image.layout.width == "100%" and explorer.image.layout.height == "auto"
    # A 1400 px window with the file browser open leaves ~1000 px for the output: both fit side
    # by side; narrower, the figure goes under the controls rather than squeezing them.
    assert _px(w.CONTROLS_WIDTH) + _px(w.FIGURE_MIN_WIDTH) <= 1000
