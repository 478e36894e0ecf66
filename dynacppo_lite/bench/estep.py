"""``bench estep``: time and optimality gap of both E-step methods, N from 1e3 to 1e5.

Instances: reward advantages ~ N(0, 1), cost advantages correlated with them (rho = 0.5) with a
sparse positive part, the cost constraint active, the paper's KL budget and a lower bound of 0.6
(so that clipping happens). The gap is relative to the convex solver (SciPy SLSQP, only up to
``--solver-max-n`` where it finishes in reasonable time) and, for larger N, to the exact method.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from dynacppo_lite.bench.common import command_line, markdown_table, write_results
from dynacppo_lite.estep import solve_estep

KL_BUDGET = 0.02 / (2 * math.log(2) - 1)


def instance(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(adv_r, adv_c, cost_margin) with the cost constraint active."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n)
    c = 0.5 * a + np.sqrt(0.75) * rng.standard_normal(n) + (rng.random(n) < 0.1) * 2.0
    margin = -0.05 * np.std(c) * math.sqrt(2 * KL_BUDGET)
    return a, c, margin


def solver_value(a: np.ndarray, c: np.ndarray, margin: float, lb: float) -> float:
    """The optimum of the E-step problem by SciPy's SLSQP (independent of the package)."""
    n = a.size
    cons = [{"type": "eq", "fun": lambda v: v.mean() - 1.0, "jac": lambda v: np.full(n, 1 / n)},
            {"type": "ineq", "fun": lambda v: 2 * KL_BUDGET - np.mean((v - 1) ** 2),
             "jac": lambda v: -2 * (v - 1) / n},
            {"type": "ineq", "fun": lambda v: margin - np.mean((v - 1) * c), "jac": lambda v: -c / n}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = minimize(lambda v: -np.mean(v * a), np.ones(n), jac=lambda v: -a / n,
                       bounds=[(lb, None)] * n, constraints=cons, method="SLSQP",
                       options={"ftol": 1e-12, "maxiter": 500})
    return float(np.mean(res.x * a))


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time (ms) over ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m dynacppo_lite bench estep", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 3_000, 10_000, 30_000, 100_000])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--lower-bound", type=float, default=0.6)
    p.add_argument("--solver-max-n", type=int, default=1_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench_results/estep"))
    args = p.parse_args(argv)
    started = time.time()
    rows = []
    for n in args.sizes:
        a, c, margin = instance(n, args.seed)
        kw = dict(cost_margin=margin, kl_budget=KL_BUDGET, lower_bound=args.lower_bound)
        t_h, h = timed(lambda a=a, c=c, kw=kw: solve_estep(a, c, method="heuristic", **kw),
                       args.repeats)
        t_e, e = timed(lambda a=a, c=c, kw=kw: solve_estep(a, c, method="exact", **kw),
                       args.repeats)
        ref, t_s = e.objective, float("nan")
        if n <= args.solver_max_n:
            t0 = time.perf_counter()
            ref = solver_value(a, c, margin, args.lower_bound)
            t_s = (time.perf_counter() - t0) * 1e3
        rows.append({"N": n, "heuristic_ms": t_h, "exact_ms": t_e, "exact/heuristic": t_e / t_h,
                     "solver_ms": t_s, "gap_heuristic": (ref - h.objective) / abs(ref),
                     "gap_exact": (ref - e.objective) / abs(ref),
                     "reference": "SLSQP" if n <= args.solver_max_n else "exact",
                     "clip_passes_h": h.clip_passes, "clip_passes_e": e.clip_passes})
        print(f"N={n}: heuristic {t_h:.2f} ms, exact {t_e:.2f} ms", flush=True)
    cols = ["N", "heuristic_ms", "exact_ms", "exact/heuristic", "solver_ms", "gap_heuristic",
            "gap_exact", "reference", "clip_passes_h", "clip_passes_e"]
    table = markdown_table(rows, cols) + (
        "\n\ngap = (reference objective - method objective) / |reference|, where the objective is "
        "mean(v * A); times are medians over the repeats (ms).")
    write_results(args.out, "estep", "E-step: time and optimality gap", table, rows,
                  command_line("estep", argv), started)
    return 0
