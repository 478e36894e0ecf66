"""What every checker shares: run the cases, compare with the reference, name the mistake.

A checker calls the learner's function on its cases and stops at the first wrong one. A wrong
answer is matched against *typical mistakes*: small, deliberately wrong variants of the
computation. When the learner's output equals a mistake's output on the failing case (and that
mistake does make a difference there), the hint names the mistake; otherwise the hint says where
the output first differs. Nothing here raises on a wrong answer: a notebook under nbval must not
fail while a learner is still working.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class CheckResult:
    """What a checker found. Truthy when every case passed.

    ``case``: the name of the first wrong case (None if all passed); ``mistake``: the key of
    the typical mistake recognised on it (None if none was); ``message``: what was printed.
    """

    topic: str
    passed: bool
    n_cases: int
    case: str | None = None
    mistake: str | None = None
    message: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message


@dataclass
class Case:
    """One call of the learner's function: ``fn(*args, **kwargs)``, named for the messages."""

    name: str
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Mistake:
    """A typical mistake: ``fn`` computes the wrong answer it gives; ``hint`` explains the fix."""

    key: str
    fn: Callable[..., Any]
    hint: str


#: ``compare(got, want) -> (equal, what differs)``.
Compare = Callable[[Any, Any], tuple[bool, str]]


def run_cases(topic: str, fn: Callable[..., Any], cases: Sequence[Case],
              reference: Callable[..., Any], mistakes: Sequence[Mistake], compare: Compare,
              quiet: bool) -> CheckResult:
    """Run ``fn`` on every case; stop at the first wrong one with the best hint we have."""

    def call(f: Callable[..., Any], case: Case) -> Any:
        # Deep copies: a learner's in-place edit must not change the reference's inputs.
        return f(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))

    n = len(cases)
    for i, case in enumerate(cases, start=1):
        want = call(reference, case)
        head = f"{topic}: case {i}/{n} ({case.name})"
        try:
            got = call(fn, case)
        except Exception as exc:  # the learner's code: anything can happen
            msg = (f"{head}: your function raised {type(exc).__name__}: {exc}\n"
                   "Hint: check the argument order and that you return a value (see the "
                   "exercise's signature).")
            return _finish(CheckResult(topic, False, n, case.name, None, msg), quiet)
        ok, detail = compare(got, want)
        if ok:
            continue
        mistake = _diagnose(fn, case, cases, reference, mistakes, compare, call)
        if mistake is not None:
            msg = f"{head} is wrong.\nHint: {mistake.hint}\n({detail})"
            return _finish(CheckResult(topic, False, n, case.name, mistake.key, msg), quiet)
        msg = f"{head} is wrong: {detail}."
        return _finish(CheckResult(topic, False, n, case.name, None, msg), quiet)
    msg = f"{topic}: all {n} cases match the reference. Well done!"
    return _finish(CheckResult(topic, True, n, message=msg), quiet)


def _diagnose(fn: Callable[..., Any], failed: Case, cases: Sequence[Case],
              reference: Callable[..., Any], mistakes: Sequence[Mistake], compare: Compare,
              call: Callable[[Callable[..., Any], Case], Any]) -> Mistake | None:
    """The typical mistake that explains the learner's answer, or None.

    Candidates are the mistakes that change the answer on the failing case and reproduce the
    learner's answer there. When several do (a label has few values), the one that also
    reproduces the learner's answers on the most other cases wins; ties go to the list order.
    """
    def same(f: Callable[..., Any], g_out: Any, case: Case) -> bool:
        try:
            return compare(g_out, call(f, case))[0]
        except Exception:  # a mistake variant that cannot handle a case: no evidence
            return False

    got = call(fn, failed)
    want = call(reference, failed)
    candidates = [m for m in mistakes
                  if not compare(call(m.fn, failed), want)[0] and same(m.fn, got, failed)]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    outputs = []
    for case in cases:
        try:
            outputs.append((case, call(fn, case)))
        except Exception:  # the learner's function fails on another case: skip that case
            continue
    scores = [sum(same(m.fn, out, case) for case, out in outputs) for m in candidates]
    return candidates[int(np.argmax(scores))]


def _finish(result: CheckResult, quiet: bool) -> CheckResult:
    if not quiet:
        print(result.message)
    return result


def as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def compare_arrays(rtol: float = 1e-5, atol: float = 1e-8, index_name: str = "i") -> Compare:
    def compare(got: Any, want: Any) -> tuple[bool, str]:
        try:
            g = as_array(got)
        except (TypeError, ValueError):
            return False, f"expected an array of numbers, got {type(got).__name__}"
        w = as_array(want)
        if g.shape != w.shape:
            return False, f"expected shape {w.shape}, got shape {g.shape}"
        close = np.isclose(g, w, rtol=rtol, atol=atol)
        if close.all():
            return True, ""
        j = int(np.flatnonzero(~close.ravel())[0])
        idx = np.unravel_index(j, w.shape)
        where = idx[0] if len(idx) == 1 else idx
        return False, (f"first wrong entry at {index_name}={where}: expected {w[idx]:.6g}, "
                       f"got {g[idx]:.6g}")
    return compare


def compare_tuple(names: Sequence[str], rtol: float = 1e-6, atol: float = 1e-10) -> Compare:
    def compare(got: Any, want: Any) -> tuple[bool, str]:
        if isinstance(got, np.ndarray) and got.ndim == 1:
            got = tuple(got)
        if not isinstance(got, tuple | list) or len(got) != len(names):
            return False, f"expected a tuple ({', '.join(names)}), got {got!r:.80}"
        for name, g, w in zip(names, got, want, strict=True):
            if isinstance(w, bool | np.bool_):
                if not isinstance(g, bool | np.bool_) or bool(g) != bool(w):
                    return False, f"{name}: expected {bool(w)}, got {g!r}"
                continue
            try:
                g_arr = as_array(g)
            except (TypeError, ValueError):
                return False, f"{name}: expected a number, got {type(g).__name__}"
            if g_arr.shape != ():
                return False, f"{name}: expected a single number, got shape {g_arr.shape}"
            if not np.isclose(float(g_arr), float(w), rtol=rtol, atol=atol):
                return False, f"{name}: expected {float(w):.6g}, got {float(g_arr):.6g}"
        return True, ""
    return compare
