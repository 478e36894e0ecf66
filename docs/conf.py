"""Sphinx configuration of the tutorial's website (``make site``; README: "The website").

Sphinx + myst-nb: the README, DESIGN.md and the guides are MyST markdown pages, the six notebooks
are chapters executed at build time in smoke mode (toy task, tiny budgets: about a minute, cached
by jupyter-cache between builds), and the API reference comes from the docstrings (autodoc).
Everything a page loads is in the built folder: MathJax is copied from the ``django-static-mathjax``
wheel (PyPI) and the notebooks' widgets fall back to the PNG they carry, so nothing is fetched
when the site is built or read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import mathjax  # django-static-mathjax: MathJax 3.2.2's browser build, as a Python package

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
# The chapters' kernels: smoke mode, this checkout, headless MuJoCo.
os.environ["DYNACPPO_SMOKE"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
for var in ("MUJOCO_GL", "PYOPENGL_PLATFORM"):
    os.environ.setdefault(var, "egl")

project = "dynacppo_lite"
author = "the dynacppo_lite authors"
copyright = "the dynacppo_lite authors, MIT licence"
# napoleon: the Google-style "Args:" sections of some docstrings (make_env).
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax",
              "sphinx.ext.viewcode",
              "sphinx.ext.githubpages"]  # githubpages: the .nojekyll file GitHub Pages needs
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = "dynacppo_lite: safe RL with Constrained PPO"
html_static_path = ["_static"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # the README's level-3 headings under a level-1 title

# --- the chapters: notebooks/*.ipynb, executed in smoke mode ------------------------------------
def _library_hash() -> str:
    """The package's source, hashed: jupyter-cache keys on a notebook's own code only, so one
    cache per library version re-executes the chapters when the library changes."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "dynacppo_lite").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


nb_execution_mode = "cache"
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache" / _library_hash())
nb_execution_timeout = 600
nb_execution_raise_on_error = True  # a chapter that fails to run fails the build
nb_output_stderr = "remove"  # library warnings (gymnasium, torch) are not the lesson
nb_merge_streams = True
# The widgets' own JavaScript would come from a CDN: leave it out and show each explorer's and
# the training monitor's PNG (dynacppo_lite.widgets puts one in every widget's display data).
nb_ipywidgets_js: dict = {}
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]

def chapter_note(number: str) -> str:
    """What the reader sees first on a chapter: how its outputs were made, and the real ones."""
    # The committed figures/<number>_*.png|gif: what full mode writes for this chapter.
    names = sorted(p.name for p in (ROOT / "figures").glob(f"{number}_*") if p.suffix in (".png", ".gif"))
    figures = "\n\n".join(f"![{name}](../../figures/{name})" for name in names)
    return (
        ":::{note}\n"
        "**How this page was made.** Its code ran when the site was built, in *smoke mode* "
        "(`DYNACPPO_SMOKE=1`): runs train on the toy task `ToySpeedLimit-v0` for a few thousand "
        "steps, so the training curves below show that the code works, not what the algorithms "
        "reach. Explorers appear as still pictures (`make app` serves them live). The figures "
        "that full mode (`make lab FULL=1`, Safety-Gymnasium tasks) wrote for this chapter, "
        "committed in `figures/`, follow; measured results are on the "
        "[Results](../results.md) page.\n\n"
        f"{figures}\n"
        ":::\n")


def prepare_chapters(app) -> None:
    """Copy each notebook into docs/chapters/ with the note after its title (rewritten only
    when it changed, so Sphinx and the execution cache see unchanged chapters as unchanged)."""
    out = DOCS / "chapters"
    out.mkdir(exist_ok=True)
    for src in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        nb = json.loads(src.read_text())
        note = {"cell_type": "markdown", "id": "site-note", "metadata": {},
                "source": chapter_note(src.name[:2])}
        nb["cells"].insert(1, note)
        text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        dst = out / src.name
        if not dst.is_file() or dst.read_text() != text:
            dst.write_text(text)


def prepare_quickstart(app) -> None:
    """docs/quickstart.md: the README under its own title, its links retargeted to the site."""
    text = (ROOT / "README.md").read_text().split("\n", 1)[1]
    for old, new in (("](DESIGN.md)", "](design.md)"), ("](docs/", "]("), ("](figures/", "](../figures/")):
        text = text.replace(old, new)
    text = "# Quick start\n\nThe repository's front page (`README.md`).\n" + text
    dst = DOCS / "quickstart.md"
    if not dst.is_file() or dst.read_text() != text:
        dst.write_text(text)


# --- MathJax from the wheel, into the built site ---------------------------------------------------
MATHJAX_ES5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {"options": {"enableMenu": False}}  # the menu lazy-loads speech modules


def copy_mathjax(app, exception) -> None:
    """tex-chtml.js, the TeX extensions it autoloads and its fonts (about 3 MB of the 24)."""
    if exception is not None or app.builder.format != "html":
        return
    dst = Path(app.outdir) / "_static" / "mathjax"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(MATHJAX_ES5 / "tex-chtml.js", dst / "tex-chtml.js")
    for sub in ("input/tex/extensions", "output/chtml/fonts/woff-v2"):
        shutil.copytree(MATHJAX_ES5 / sub, dst / sub, dirs_exist_ok=True)


# --- API reference ------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}


def setup(app) -> None:
    app.connect("builder-inited", prepare_chapters)
    app.connect("builder-inited", prepare_quickstart)
    app.connect("build-finished", copy_mathjax)
