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


def _read(name: str) -> str:
    return (ROOT / name).read_text()


#: Measurements quoted in more than one place: (what, [(file, pattern whose group 1 is the
#: number), ...]). Every place that quotes it must give the same number; docs/results.md holds
#: each, and a pattern that no longer matches fails (a quote that moved must be followed).
QUOTED = [
    ("make train, final cost", [("docs/results.md", r"\*\*(\d+\.\d) against the limit of 25\*\*"),
                                ("README.md", r"\((\d+\.\d) against 25 over the last")]),
    ("make train, final return", [("docs/results.md", r"rises from about\s+0 to \d+ by \de5 steps "
                                                      r"and ends at (\d+\.\d)"),
                                  ("README.md", r"at a return of (\d+\.\d)")]),
    ("dyna-cppo's speed against cppo's", [("docs/results.md", r"\*\*(0\.\d+)x\*\*")]),
]


@pytest.mark.parametrize(("what", "places"), QUOTED, ids=[q[0] for q in QUOTED])
def test_a_measurement_quoted_twice_says_the_same(what: str, places: list[tuple[str, str]]) -> None:
    found = {}
    for name, pattern in places:
        match = re.search(pattern, _read(name))
        assert match, f"{name} no longer quotes {what} as {pattern!r}"
        found[name] = match.group(1)
    assert len(set(found.values())) == 1, f"{what}: {found}"


def test_the_readme_results_come_from_docs_results() -> None:
    """The README's table quotes docs/results.md: each return / cost pair is there too."""
    section = _read("README.md").split("\n## Results", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    pairs = re.findall(r"(\d[\d.]*) / (\d[\d.]*)", table)
    results = _read("docs/results.md")
    missing = [f"{ret} / {cost}" for ret, cost in pairs
               if not re.search(rf"(?<![\d.]){re.escape(ret)}( ± [\d.]+)? / {re.escape(cost)}(?![\d])",
                                results)]
    assert pairs and missing == []


def test_speed_and_durations_are_not_quoted_apart() -> None:
    """Dyna's speed against cppo's is quoted in docs/results.md only, and nothing says notebook
    05's full mode takes hours (its introduction gives the time)."""
    for name in ["README.md", "DESIGN.md", "Makefile", "dynacppo_lite/course.py",
                 *(p for p in DOCS if p != "docs/results.md")]:
        text = _read(name)
        assert not re.search(r"\d\.\d+x cppo's", text), name
        assert "for hours" not in text, name
