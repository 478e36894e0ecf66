"""Checkers for the notebooks' exercises: one ``check_<topic>(fn)`` per notebook.

Each checker calls the learner's function on several cases, compares it with the reference
(the library's own code wherever the library computes the quantity) and prints either a
success line or, at the *first* wrong case, a specific hint. A wrong answer raises
:class:`CheckFailed` (an ``AssertionError`` carrying the hint), so nbval, nbgrader's autograder
and ``python -m dynacppo_lite check`` fail on it; ``verdict(check_gae, fn)`` (or
``strict=False``) returns the :class:`CheckResult` instead, truthy when every case passed. A
function that hands back the library's own answer (``dynacppo_lite.gae.gae``, a reference) fails.

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
from dynacppo_lite.exercises.checking import CheckFailed, CheckResult, verdict
from dynacppo_lite.exercises.estep_case import check_estep_case, reference_estep_case
from dynacppo_lite.exercises.mstep_gradient import check_mstep_gradient, reference_mstep_gradient
from dynacppo_lite.exercises.one_step_error import check_one_step_error, reference_one_step_error
from dynacppo_lite.exercises.run_summary import check_run_summary, reference_run_summary
from dynacppo_lite.exercises.smoothing import check_smoothing, reference_smoothing

#: The exercises by name (for ``python -m dynacppo_lite check NAME FILE.py``): the checker, the
#: function the notebook asks for, and the notebook.
EXERCISES: dict[str, tuple] = {
    "one_step_error": (check_one_step_error, "one_step_errors", "01_dynamics_learning"),
    "gae": (check_gae, "my_gae", "02_dual_advantages"),
    "estep_case": (check_estep_case, "estep_case", "03_estep_geometry"),
    "mstep_gradient": (check_mstep_gradient, "tracking_grad", "04_mstep_clipping"),
    "run_summary": (check_run_summary, "summarise", "05_training_runs"),
    "smoothing": (check_smoothing, "my_smooth", "06_interactive_explorer"),
}

__all__ = [
    "EXERCISES",
    "CheckFailed",
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
    "verdict",
]
