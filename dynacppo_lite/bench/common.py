"""Shared plumbing of the benchmark suites: result files and the recorded command."""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch


def suite_parser(suite: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m dynacppo_lite bench SUITE``: the suite's module docstring
    ``doc`` is its ``--help`` text, line breaks kept."""
    return argparse.ArgumentParser(prog=f"python -m dynacppo_lite bench {suite}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def command_line(suite: str, argv: list[str]) -> str:
    """The exact command that reproduces a result."""
    return shlex.join(["python", "-m", "dynacppo_lite", "bench", suite, *argv])


def machine() -> str:
    """One line naming the machine the numbers come from."""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPU cores{gpu}, Python {sys.version.split()[0]}"


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub markdown table of ``rows`` (floats with 3 significant digits)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(out: Path, name: str, title: str, table: str, data: Any, command: str,
                  started: float) -> Path:
    """Write ``<out>/<name>.md`` (title, machine, command, table) and ``<name>.json``."""
    out.mkdir(parents=True, exist_ok=True)
    minutes = (time.time() - started) / 60
    md = (f"# {title}\n\nMachine: {machine()}. Took {minutes:.1f} min.\n\n"
          f"Command: `{command}`\n\n{table}\n")
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.json").write_text(json.dumps({"command": command, "machine": machine(),
                                                  "minutes": minutes, "results": data}, indent=2))
    print(md)
    return out / f"{name}.md"


def save_figure(fig: Any, out: Path, dpi: int = 100) -> Path:
    """Lay out ``fig`` (a matplotlib figure), write it to ``out`` (folders made) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def peak_rss_mib() -> float:
    """Peak resident memory of this process plus its finished children, MiB (Linux)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024


def current_rss_mib() -> float:
    """Current resident memory of this process, MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
