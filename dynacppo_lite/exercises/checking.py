"""What every checker shares: run the cases, compare with the reference, name the mistake.

A checker calls the learner's function on its cases and stops at the first wrong one. A wrong
answer is matched against *typical mistakes*: small, deliberately wrong variants of the
computation. When the learner's output equals a mistake's output on the failing case (and that
mistake does make a difference there), the hint names the mistake; otherwise the hint says where
the output first differs.

A wrong answer *raises* :class:`CheckFailed` (an ``AssertionError``) whose message is the hint,
so nbval, nbgrader's autograder and ``python -m dynacppo_lite check`` all fail on it;
``strict=False`` (or :func:`verdict`) returns the :class:`CheckResult` instead, for interactive
use. An answer that calls the library's own implementation of the exercise (or its reference)
is refused (:func:`library_use`): the library is installed, so the reference is public, and the
checker is what stops a submission from handing it back.
"""

from __future__ import annotations

import builtins
import copy
import functools
import types
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


class CheckFailed(AssertionError):
    """A checker's verdict on a wrong answer; the message names the case and the hint."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.message)
        self.result = result


def verdict(check: Callable[..., CheckResult], fn: Callable[..., Any], *,
            quiet: bool = False) -> CheckResult:
    """The checker's verdict without raising: ``verdict(check_gae, my_gae)`` prints the same
    message and returns the :class:`CheckResult` (truthy when every case passed)."""
    return check(fn, quiet=quiet, strict=False)


def library_use(fn: Callable[..., Any], modules: Sequence[str]) -> str | None:
    """The library object ``fn`` hands the work to, or None.

    Looks at ``fn`` itself, the global names its code (and the code of functions defined in it)
    reads or imports, and its closure: any object of a module in ``modules``, of ``dynacppo_lite.exercises``,
    or the package ``dynacppo_lite`` itself (from which every module is reachable) counts. A guard
    against handing back the reference, not a sandbox: a determined learner can hide a call.
    """
    banned = (*modules, "dynacppo_lite.exercises")

    def owner(obj: Any) -> str | None:
        if isinstance(obj, types.ModuleType):
            name = obj.__name__
            return name if name == "dynacppo_lite" or _under(name, banned) else None
        mod = getattr(obj, "__module__", None)
        if isinstance(mod, str) and _under(mod, banned):
            return f"{mod}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
        return None

    found = owner(fn)
    if found or not isinstance(fn, types.FunctionType):
        return found
    glb = fn.__globals__
    codes, seen = [fn.__code__], set()
    while codes:
        code = codes.pop()
        if code in seen:
            continue
        seen.add(code)
        for name in code.co_names:
            if name == "dynacppo_lite" or _under(name, banned):  # an import inside the function
                return name
            obj = glb.get(name, getattr(builtins, name, None))
            if obj is not None and (found := owner(obj)):
                return found
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    for cell in fn.__closure__ or ():
        try:
            obj = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if found := owner(obj):
            return found
    return None


def _under(name: str, modules: Sequence[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


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


def mistake_from_variant(variant: Callable[..., Any]) -> Callable[..., Mistake]:
    """``make(key, hint, **fixed)``: a :class:`Mistake` whose answer is ``variant`` called with
    the exercise's arguments and the keywords ``fixed`` that select the wrong variant."""
    def make(key: str, hint: str, **fixed: Any) -> Mistake:
        return Mistake(key, functools.partial(variant, **fixed), hint)

    return make


#: ``compare(got, want) -> (equal, what differs)``.
Compare = Callable[[Any, Any], tuple[bool, str]]


def run_cases(topic: str, fn: Callable[..., Any], cases: Sequence[Case],
              reference: Callable[..., Any], mistakes: Sequence[Mistake], compare: Compare,
              quiet: bool, *, strict: bool = True, library: Sequence[str] = (),
              library_ok: bool = False) -> CheckResult:
    """Run ``fn`` on every case; stop at the first wrong one with the best hint we have.

    ``strict``: raise :class:`CheckFailed` on a wrong answer (else return the result).
    ``library``: the modules that hold this exercise's answer; a ``fn`` that uses them (or is the
    reference) fails, unless ``library_ok`` (the package's own tests check the reference)."""
    result = _run(topic, fn, cases, reference, mistakes, compare, library, library_ok)
    if not quiet:
        print(result.message)
    if strict and not result.passed:
        raise CheckFailed(result)
    return result


def _run(topic: str, fn: Callable[..., Any], cases: Sequence[Case], reference: Callable[..., Any],
         mistakes: Sequence[Mistake], compare: Compare, library: Sequence[str],
         library_ok: bool) -> CheckResult:

    def call(f: Callable[..., Any], case: Case) -> Any:
        # Deep copies: a learner's in-place edit must not change the reference's inputs.
        return f(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))

    n = len(cases)
    used = None if library_ok else library_use(fn, library)
    if used is not None:
        msg = (f"{topic}: your function uses {used}, the library's own answer.\nHint: write it "
               "yourself from the exercise's description (numpy is enough).")
        return CheckResult(topic, False, n, None, "uses_library", msg)
    for i, case in enumerate(cases, start=1):
        want = call(reference, case)
        head = f"{topic}: case {i}/{n} ({case.name})"
        try:
            got = call(fn, case)
        except Exception as exc:  # the learner's code: anything can happen
            msg = (f"{head}: your function raised {type(exc).__name__}: {exc}\n"
                   "Hint: check the argument order and that you return a value (see the "
                   "exercise's signature).")
            return CheckResult(topic, False, n, case.name, None, msg)
        ok, detail = compare(got, want)
        if ok:
            continue
        mistake = _diagnose(fn, case, cases, reference, mistakes, compare, call)
        if mistake is not None:
            msg = f"{head} is wrong.\nHint: {mistake.hint}\n({detail})"
            return CheckResult(topic, False, n, case.name, mistake.key, msg)
        msg = f"{head} is wrong: {detail}."
        return CheckResult(topic, False, n, case.name, None, msg)
    msg = f"{topic}: all {n} cases match the reference. Well done!"
    return CheckResult(topic, True, n, message=msg)


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
