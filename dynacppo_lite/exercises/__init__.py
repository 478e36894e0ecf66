"""Checkers for the notebooks' exercises: one ``check_<topic>(fn)`` per notebook.

Each checker calls the learner's function on several cases, compares it with the reference
(the library's own code wherever the library computes the quantity) and prints either a
success line or, at the *first* wrong case, a specific hint. The checker never raises on a
wrong answer (a notebook that runs under nbval must not fail because a learner is still
working); it returns a :class:`CheckResult` that is truthy when every case passed.

A wrong answer is matched against *typical mistakes*: small, deliberately wrong variants of the
computation (truncation treated as termination in GAE, the lower clip on the wrong side in
the M-step, ...). When the learner's output equals a mistake's output on the failing case (and
that mistake does make a difference there), the hint names the mistake. Otherwise the hint
says where the output first differs.

One module per exercise holds its reference, cases and typical mistakes; ``checking`` holds
what they share:

=========================  ==================  ========  ======================================
checker                    module              notebook  the learner writes
=========================  ==================  ========  ======================================
check_one_step_error       one_step_error.py   01        (model MSE, no-change MSE) of a
                                                         one-step prediction
check_gae                  advantages.py       02        single-stream GAE with termination vs
                                                         truncation
check_estep_case           estep_case.py       03        which case of Theorem 3.4 a batch
                                                         falls in
check_mstep_gradient       mstep_gradient.py   04        d loss / d r of the clipped tracking
                                                         loss
check_run_summary          run_summary.py      05        tail means of a run and whether it
                                                         meets the limit
check_smoothing            smoothing.py        06        the trailing moving average of the run
                                                         browser
=========================  ==================  ========  ======================================
"""

from dynacppo_lite.exercises.advantages import check_gae, reference_gae
from dynacppo_lite.exercises.checking import CheckResult
from dynacppo_lite.exercises.estep_case import check_estep_case, reference_estep_case
from dynacppo_lite.exercises.mstep_gradient import check_mstep_gradient, reference_mstep_gradient
from dynacppo_lite.exercises.one_step_error import check_one_step_error, reference_one_step_error
from dynacppo_lite.exercises.run_summary import check_run_summary, reference_run_summary
from dynacppo_lite.exercises.smoothing import check_smoothing, reference_smoothing

__all__ = [
    "CheckResult",
    "check_estep_case",
    "check_gae",
    "check_mstep_gradient",
    "check_one_step_error",
    "check_run_summary",
    "check_smoothing",
    "reference_estep_case",
    "reference_gae",
    "reference_mstep_gradient",
    "reference_one_step_error",
    "reference_run_summary",
    "reference_smoothing",
]
