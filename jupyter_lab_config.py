"""Jupyter configuration of ``make lab`` (``jupyter lab --config=jupyter_lab_config.py``).

* The server is rooted at the repository, so jupytext finds ``jupytext.toml`` and every save in
  Lab writes both halves of a pair (``notebooks/NN_name.py`` and its ``.ipynb``).
* Notebooks are saved **without outputs**: the committed ``.ipynb`` files stay clean however
  long one works in Lab (re-run a notebook to see its outputs again after reopening it).
"""


def strip_outputs(model, path, contents_manager=None, **kwargs):
    """Pre-save hook: empty every code cell's outputs and execution count before writing."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    for cell in model["content"].get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None


c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file
c.ContentsManager.pre_save_hook = strip_outputs
c.ServerApp.default_url = "/lab/tree/notebooks"
