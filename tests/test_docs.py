"""Every file the documentation points to is in the repository.

README.md, DESIGN.md and the site's pages (docs/*.md): file names in backticks and the targets
of markdown links (relative to the page or the root); package docstrings: every ``*.md`` they
name and every path (with a ``/``) to a ``.md``, ``.py``, ``.png`` or ``.ipynb`` file. Skipped:
URLs, commands (anything with a space), glob patterns, and names after a command-line option
(``--out/env.md`` is a file a benchmark writes).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "dynacppo_lite"
FILE_SUFFIXES = (".md", ".py", ".png", ".gif", ".ipynb", ".yml", ".toml")


def _exists(name: str, base: Path = ROOT) -> bool:
    """Relative to the document (``base``), the repository root, or the package (``envs/fast.py``,
    ``gae.py``)."""
    name = name.split("#")[0]
    return any((d / name).exists() for d in (base, ROOT, PACKAGE_DIR))


def _is_path(token: str) -> bool:
    return not (" " in token or "://" in token or "*" in token or token.startswith("-"))


def markdown_mentions(text: str) -> set[str]:
    """Backticked file names and link targets, outside fenced code blocks."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    ticked = {t for t in re.findall(r"`([^`\n]+)`", prose) if t.endswith(FILE_SUFFIXES)}
    linked = set(re.findall(r"\]\(([^)\s]+)\)", prose))
    return {t for t in ticked | linked if _is_path(t)}


def docstring_mentions(code: str) -> set[str]:
    docs = [ast.get_docstring(node) or "" for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)]
    tokens = set(re.findall(r"[\w./-]+\.(?:md|py|png|ipynb)\b", "\n".join(docs)))
    return {t for t in tokens if _is_path(t) and (t.endswith(".md") or "/" in t)}


DOCS = ["README.md", "DESIGN.md",
        *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS)
def test_markdown_mentions_exist(doc: str) -> None:
    path = ROOT / doc
    missing = sorted(t for t in markdown_mentions(path.read_text()) if not _exists(t, path.parent))
    assert not missing, f"{doc} mentions files that are not in the repository: {missing}"


def test_docstring_mentions_exist() -> None:
    missing = [f"{path.relative_to(ROOT)}: {t}" for path in sorted(PACKAGE_DIR.rglob("*.py"))
               for t in sorted(docstring_mentions(path.read_text())) if not _exists(t)]
    assert not missing, "docstrings name files that are not in the repository:\n" + "\n".join(missing)


def test_the_readme_sends_newcomers_to_the_design_note() -> None:
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "](DESIGN.md)" in head


def test_the_mention_finder_sees_paths_and_skips_the_rest() -> None:
    text = ("See `figures/a.png`, [design](DESIGN.md), `gae.py` and ![x](figures/b.png); not "
            "`make train`, `runs/*.png`, [site](https://example.org/x.md), `--out/env.md`.\n"
            "```bash\npython `inside/a/fence.py`\n```\n")
    assert markdown_mentions(text) == {"figures/a.png", "DESIGN.md", "gae.py", "figures/b.png"}
    code = '"""Read ``architecture.md`` and tests/test_x.py; writes ``--out/env.md``; gae.py."""\n'
    assert docstring_mentions(code) == {"architecture.md", "tests/test_x.py"}


def test_the_readme_stays_a_front_page() -> None:
    """What a newcomer reads in two minutes; the long sections live on the site's pages."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.split()) < 900
    for page in ("install", "library", "course", "performance", "results"):
        assert f"](docs/{page}.md)" in readme
    results = (ROOT / "docs" / "results.md").read_text()
    assert "](../figures/benchmarks/learning_SafetyPointGoal1-v0.png)" in results
