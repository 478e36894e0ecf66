"""The run configuration: one typed dataclass, one docstring per field.

Defaults follow the CPPO paper (arXiv 2305.14216, Tables 1-2) where it gives a value, except
the batch: the paper collects 3e4 steps per update; 4,000 keeps CPU runs responsive here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

ALGOS = ("cppo", "ppo-lag", "dyna-cppo")
DEVICES = ("auto", "cpu", "cuda")
#: The cost controls each algorithm may use (``cost_control.make_cost_control``); the first is
#: the algorithm's own, the one ``cost_control="auto"`` picks.
ALGO_COST_CONTROLS: dict[str, tuple[str, ...]] = {
    "cppo": ("pid", "margin", "bang-bang"),
    "dyna-cppo": ("pid", "margin", "bang-bang"),
    "ppo-lag": ("lagrangian", "pid-lagrangian"),
}
COST_CONTROLS = ("auto", "pid", "margin", "bang-bang", "lagrangian", "pid-lagrangian")
MSTEPS = ("linear", "tracking")
DYNA_MODELS = ("ensemble", "simulator", "coordinates")
IMAGINED_ADVS = ("both", "cost")
#: Config fields renamed since runs were first saved: old name -> name today. ``config.json``,
#: checkpoints, ``--set`` and a resume's ``changes`` may use either (:func:`renamed_fields`).
RENAMED_FIELDS = {"kl": "estep_kl", "reach_init": "rho_init", "reach_smoothing": "rho_smoothing",
                  "reach_min": "rho_min"}


def renamed_fields(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (field -> value) with old field names replaced by today's (:data:`RENAMED_FIELDS`).

    >>> renamed_fields({"kl": 0.02, "seed": 1})
    {'estep_kl': 0.02, 'seed': 1}
    """
    return {RENAMED_FIELDS.get(key, key): value for key, value in values.items()}


@dataclass
class Config:
    """Everything a training run depends on (saved as ``config.json`` in the run directory)."""

    # --- run ---
    algo: str = "cppo"
    """``cppo``, ``ppo-lag`` (PPO-Lagrangian) or ``dyna-cppo`` (CPPO + imagined rollouts)."""
    env_id: str = "SafetyPointGoal1-v0"
    """Task id: Safety-Gymnasium, a preset (``CPPO-PointCircle1-v0``) or ``ToySpeedLimit-v0``."""
    seed: int = 0
    """Seeds python, numpy, torch, the envs and the action spaces."""
    total_steps: int = 1_000_000
    """Real environment steps in total (summed over envs)."""
    num_envs: int = 2
    """Parallel environments (1: in this process; more: split into one group per CPU core,
    this process stepping the first and a worker process each of the others; see
    ``envs/vector.py``)."""
    steps_per_iter: int = 4_000
    """Real steps per iteration (summed over envs); rounded down to a multiple of num_envs."""
    cost_limit: float | None = None
    """Per-episode cost limit d; ``None`` takes the task's (25 for Safety-Gymnasium, the one given
    to ``register_env``; an unknown task has none and must be given one). The run's
    ``config.json`` records the limit used."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    torch_threads: int = 1
    """CPU threads for torch; 1 leaves the other cores to the env workers."""
    log_dir: str = "runs"
    """Parent folder of the run directory."""
    run_name: str | None = None
    """Run directory name; ``None`` gives ``<algo>_<env_id>_s<seed>``."""
    checkpoint_every: int = 5
    """Write ``checkpoint.pt`` every this many iterations (and at the end)."""
    fast_env: bool = True
    """Use the fast Safety-Gymnasium reset/step path (bit-identical to stock)."""
    max_episode_steps: int | None = None
    """Override the task's episode length (``None`` keeps it)."""

    # --- networks and optimisation ---
    hidden: tuple[int, ...] = (64, 64)
    """Hidden sizes of the policy and both critics (tanh)."""
    pi_lr: float = 1e-3
    """Policy learning rate at the start (linearly annealed to ``pi_lr_final``). The paper uses
    1e-4 with 3e4-step batches over 1e7 steps; the tracking loss moves the policy little per
    step, and 1e-3 suits the short CPU runs this package is built for."""
    pi_lr_final: float = 0.0
    """Policy learning rate at the end of the run."""
    vf_lr: float = 1e-3
    """Learning rate of the reward and cost critics (paper: 1e-3)."""
    update_epochs: int = 10
    """Passes over the batch per iteration (M-step and critics)."""
    num_minibatches: int = 8
    """Minibatches per pass."""
    target_kl: float | None = 0.02
    """Stop the policy epochs early once the approximate KL exceeds this (``None``: never); the
    paper's KL target and OmniSafe's early-stop value."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip for all networks."""
    init_log_std: float = -0.5
    """Initial log standard deviation of the Gaussian policy (-0.5: std 0.6), the same for
    every algorithm. OmniSafe and CleanRL start at 0 (std 1); the comparison is in
    docs/results.md ("The policy's initial std")."""

    # --- advantages ---
    gamma: float = 0.99
    """Reward discount (paper: 0.99)."""
    lam: float = 0.97
    """Reward GAE lambda (paper: 0.97)."""
    cost_gamma: float = 0.99
    """Cost discount (paper: 0.99)."""
    cost_lam: float = 0.95
    """Cost GAE lambda (paper: 0.95)."""

    # --- CPPO: E-step, M-step, recovery ---
    estep_kl: float = 0.005
    """The E-step's KL, the size of its trust region (paper appendix E: 0.02); its budget is
    ``kl_budget`` = estep_kl / (2 ln 2 - 1). Not the M-step's early stop (``target_kl``) nor the
    realised KL of the update (``progress.csv``'s ``kl``). With the linear M-step only the
    direction of v - 1 matters, and a small trust region keeps the bound v >= b from bending
    that direction (measurements: docs/results.md, "The E-step's KL"). The tracking loss
    (``mstep = "tracking"``) needs 0.1: it follows only a tenth of v. Saved as ``kl`` before."""
    estep_method: str = "exact"
    """``exact`` (true optimum of the E-step problem) or ``heuristic`` (paper Algorithm 1)."""
    v_lower_bound: float = 0.4
    """Element-wise lower bound on the target ratios v (paper Table 2: 0.4)."""
    lower_clip: float = 0.6
    """M-step lower ratio clip b at the start (paper: 0.6), linearly annealed to the final."""
    lower_clip_final: float = 0.6
    """M-step lower ratio clip at the end of the run."""
    mstep: str = "linear"
    """The M-step loss (``mstep.py``), for normal and recovery mode alike. ``linear``: PPO's
    clipped surrogate along the E-step's v - 1 (takes the step the E-step asks for, until the
    clip or ``target_kl``). ``tracking``: the paper's clipped L2 fit of r to v (moves the policy
    a tenth of the way; see ``mstep.py`` for the measurements)."""
    estep_targets: int = 1
    """Section 3.4's multiple targets: the E-step is solved for the budgets k / K of
    ``kl_budget`` (k = 1..K) and the M-step fits, after each epoch, the smallest target whose
    budget its ratio has not yet used (``mstep.choose_target``). 1: the single target."""
    beta: float = 0.3
    """Recovery M-step mixing weight (paper appendix C.2: 0.3)."""
    cost_control: str = "auto"
    """How the windowed episode cost steers the update (``cost_control.py``). ``auto``: the
    algorithm's own, ``pid`` for cppo and dyna-cppo, ``lagrangian`` for ppo-lag
    (:attr:`resolved_cost_control`). For cppo and dyna-cppo: ``pid``, a PI controller on the
    windowed cost sets the E-step's margin; at saturation the E-step goes along -A_c
    (recovery). ``margin``: the paper's margin (d - J_c) / L, taken at the step the M-step
    realises (``realised_radius``); recovery only where that is infeasible. ``bang-bang``: the
    paper's switch (Fig. 2) on that margin: recovery while J_c > d until J_c < switch_ratio * d.
    For ppo-lag: ``lagrangian``, the multiplier by Adam (``lagrangian_*``); ``pid-lagrangian``,
    the multiplier by PID control (``pid_lag_*``). Runs saved when ppo-lag ignored this field
    load as ``auto``."""
    pid_ki: float = 0.02
    """``pid``: integral gain (change of the margin fraction u per iteration per unit of
    relative violation (d - J_c) / d). Larger holds the cost tighter at less return; 0.02 lies
    between the measured 0.01 and 0.03 (docs/results.md, "The PI controller's gains")."""
    pid_kp: float = 0.5
    """``pid``: proportional gain (u = integral + kp (d - J_c) / d)."""
    pid_integral_init: float = 1.0
    """``pid``: the integral state at the start (1: unconstrained until the measured cost says
    otherwise; 0: no predicted cost increase from the first iteration)."""
    pid_integral_min: float = -1.0
    """``pid``: lower bound of the integral state. -1, full authority: a violation that lasts
    drives u to -1 (pure cost descent) at any cost over the limit. The floor -0.5 used before
    saturated u only above about twice the limit, and SafetyPointGoal1-v0 ended at 1.9x its
    limit (docs/results.md, "The controller's authority and start")."""
    pid_error_min: float = -10.0
    """``pid``: lower clip of the relative error e = (d - J_c) / d that both terms see: a cost
    of (1 - pid_error_min) times the limit or more counts as that much and no more. -10: an
    early overshoot of 5-12x the limit (SafetyPointCircle1-v0) drives the integral as fast as it
    is large. With fixed gains it cost SafetyPointGoal1-v0 return, whose random policy's 3-6x
    overshoot then held it in recovery; the noise-scaled gains below leave that phase slow."""
    pid_noise_ref: float = 0.8
    """``pid``: the relative standard error se / d of the windowed cost at which ``pid_ki`` and
    ``pid_kp`` hold; a more precise estimate multiplies both by pid_noise_ref d / se, up to
    ``pid_max_speedup`` (0: fixed gains). 0.8 is SafetyPointGoal1-v0's early noise (se 17-28
    at d = 25), where fast gains held the policy in recovery before it learned to reach goals;
    HalfCheetah's estimate (se about 3) gets the full speed-up, which it needs (its cost rises
    late and stays near 1.3x the limit under fixed gains). docs/results.md, "Holding the
    limit"."""
    pid_max_speedup: float = 4.0
    """``pid``: the largest factor on the gains for a precise cost estimate (4: kp 2, ki 0.08,
    about the fixed gains that held HalfCheetah's limit)."""
    switch_ratio: float = 0.8
    """``bang-bang`` hysteresis: recovery starts when J_c > d and ends when J_c < ratio * d."""
    realised_radius: bool = True
    """``margin``: divide the E-step's cost margin by the realised share rho of its predicted
    cost change (``cost_control.RealisedShare``: the slope of ``mstep_cost_change`` on
    ``estep_cost_change`` over recent iterations), so that the cost constraint holds for the
    step the policy actually takes rather than for the E-step's target."""
    rho_init: float = 0.2
    """The realised share rho (``cost_control.RealisedShare``, logged as ``rho``) assumed before
    it has been measured. Saved as ``reach_init`` before."""
    rho_smoothing: float = 0.8
    """Weight of the past in rho's running sums (0: last iteration only)."""
    rho_min: float = 0.05
    """Lower bound on rho (it divides the margin)."""
    cost_window: int = 20
    """Finished episodes in the cost estimate J_c that the E-step margin, the switch and the
    Lagrange multiplier steer by (OmniSafe averages the episodes of a 20,000-step epoch)."""
    cost_pool: int = 1
    """Real batches whose cost advantages set the update's cost direction: this one and the
    ``cost_pool - 1`` before it, reweighted to the current policy (``cost_pool.py``); the reward
    direction is always this batch's. 1: this batch only, the default: pooled over 4 it cut
    ``bench recovery``'s cost by 3% and in training inflated the real samples' steps
    (docs/results.md, "More samples or bigger steps for the cost direction")."""
    cost_pool_cap: float = 1.0
    """Cap on the pooled samples' importance weights pi / mu (Retrace's c-bar)."""

    # --- PPO-Lagrangian ---
    clip_ratio: float = 0.2
    """PPO's clip range (both sides)."""
    lagrangian_lr: float = 0.007
    """Adam learning rate of the Lagrange multiplier. OmniSafe uses 0.035 once per 20,000-step
    epoch; this package updates once per 4,000-step iteration, so 0.035 * 4000 / 20000 keeps
    the multiplier's speed per environment step."""
    lagrangian_init: float = 0.0
    """Initial Lagrange multiplier (``pid-lagrangian``: the initial integral state)."""
    pid_lag_kp: float = 0.1
    """``pid-lagrangian``: proportional gain, lambda per unit of smoothed episode cost over the
    limit (OmniSafe's default, as the other ``pid_lag_*``). The ``pid_lag_*`` gains are stated
    per 20,000-step epoch, OmniSafe's update; the multiplier updates once per iteration with
    them converted per step (``cost_control.make_cost_control``), so a batch size changes
    nothing per step: at 4,000 steps its integral gain is ki / 5 and its smoothing ema^(1/5)."""
    pid_lag_ki: float = 0.01
    """``pid-lagrangian``: integral gain, change of lambda's integral per 20,000 steps per unit
    of episode cost over the limit."""
    pid_lag_kd: float = 0.01
    """``pid-lagrangian``: derivative gain, lambda per unit of rise of the smoothed episode cost
    over ``pid_lag_d_delay`` epochs (only a rise counts)."""
    pid_lag_d_delay: int = 10
    """``pid-lagrangian``: 20,000-step epochs over which the derivative term measures the rise."""
    pid_lag_ema: float = 0.95
    """``pid-lagrangian``: weight of the past per 20,000 steps in the smoothed error and cost that
    the P and D terms use (OmniSafe has one such weight per term, both 0.95 by default)."""

    # --- Dyna-CPPO ---
    model_start_iter: int = 5
    """Iterations of real data before imagined samples join the batch (seed: 10)."""
    model_horizon: int = 10
    """Length k of each imagined branch (seed's name; MBPO uses short branches)."""
    imagined_frac: float = 0.5
    """Imagined samples as a share of the real batch size (0.5: half as many as real)."""
    dyna_model: str = "ensemble"
    """What dyna-cppo's branches step in. ``ensemble``: the learned dynamics ensemble
    (``dynamics.ModelEnv``). ``simulator``: the simulator itself, set to each branch's state (a
    perfect model: the ceiling of what imagined branches can give): on tasks whose observation
    is the MuJoCo state, such as SafetyHalfCheetahVelocity-v1, ``envs.simulator.SimulatorEnv``;
    on the Goal and Circle navigation tasks ``envs.simulator.NavigationSimulatorEnv``, restoring
    the coordinate and MuJoCo state the rollout records beside each step; elsewhere a one-line
    error. The ensemble is then not fitted and its columns stay empty.
    ``coordinates``: the navigation tasks' coordinate model (``envs.coordinate_model``): the
    rollout records the privileged coordinate state (robot pose and sensors, object
    positions), the ensemble learns the robot's motion, and the lidar observation, reward and
    cost of imagined steps are the task's formulas of the predicted coordinates; the policy
    still sees only the observation. For the Goal (levels 0-1) and Circle tasks on Point and
    Car; elsewhere a one-line error."""
    ensemble_size: int = 5
    """Members of the dynamics ensemble."""
    model_hidden: tuple[int, ...] = (200, 200)
    """Hidden sizes of each dynamics member."""
    model_lr: float = 1e-3
    """Learning rate of the dynamics ensemble."""
    model_fit_epochs: int = 2
    """Maximum epochs per model fit (fits warm-start, one per iteration from the first; a fit
    stops after an epoch that improves no member's held-out loss by 1 %)."""
    model_fit_patience: int = 1
    """Epochs without a 1 % gain in any member's held-out loss before a fit stops."""
    model_fit_samples: int = 6_000
    """Transitions per fit: the newest rollout's, then older ones drawn without replacement
    (bounds the fit time as the buffer grows; with 2 epochs the fit's share of an iteration
    is in docs/results.md, "Speed")."""
    model_holdout: float = 0.2
    """Share of the buffer held out to stop the model fit."""
    buffer_capacity: int = 100_000
    """Real transitions kept in the FIFO replay buffer."""
    kappa: float = 1.0
    """Pessimism of imagined cost: mean + kappa * std across members."""
    disagreement_threshold: float = 1.0
    """Cut a branch where the ensemble's disagreement (normalised units) exceeds this."""
    imagined_critics: bool = True
    """Train the critics on imagined samples too."""
    imagined_policy: bool = True
    """Give imagined samples to the E-step and M-step too (False: they train the critics only,
    and the policy learns from real advantages alone)."""
    imagined_adv: str = "both"
    """Which advantages imagined samples bring to the E-step and M-step. ``both``: reward and
    cost. ``cost``: the cost direction only (their A_r is 0, so they steer the cost side of the
    E-step while the reward direction is the real batch's): where the model predicts the cost
    well and the reward advantages poorly (the coordinate model on the Goal task, imagined vs
    real correlation about 0.58 for A_c, 0.01-0.21 for A_r). The critics still train on the
    imagined returns of both."""
    model_rounds: int = 0
    """Further E-step/M-step rounds per iteration, each on a fresh imagined batch of
    ``imagined_frac`` times the real batch size (ME-TRPO's several policy updates per real
    batch); 0: one update on the real (and imagined) batch."""

    @property
    def resolved_cost_control(self) -> str:
        """The cost control the run uses: ``cost_control``, with ``auto`` replaced by the
        algorithm's own (the first of :data:`ALGO_COST_CONTROLS`)."""
        if self.cost_control == "auto":
            return ALGO_COST_CONTROLS[self.algo][0]
        return self.cost_control

    @property
    def kl_budget(self) -> float:
        """delta' = estep_kl / (2 ln 2 - 1): the E-step's trust-region budget (appendix E)."""
        return self.estep_kl / (2 * math.log(2) - 1)

    def validate(self) -> Config:
        """Raise a one-line ValueError for any setting that cannot work; return self."""
        checks = [
            (self.algo in ALGOS, f"algo must be one of {ALGOS}, got {self.algo!r}"),
            (self.device in DEVICES, f"device must be one of {DEVICES}, got {self.device!r}"),
            (self.cost_pool >= 1, f"cost_pool must be >= 1 (batches), got {self.cost_pool}"),
            (self.cost_pool_cap > 0, f"cost_pool_cap must be > 0, got {self.cost_pool_cap}"),
            (self.estep_method in ("exact", "heuristic"),
             f"estep_method must be 'exact' or 'heuristic', got {self.estep_method!r}"),
            (self.total_steps > 0, f"total_steps must be > 0, got {self.total_steps}"),
            (self.num_envs >= 1, f"num_envs must be >= 1, got {self.num_envs}"),
            (self.steps_per_iter >= self.num_envs,
             f"steps_per_iter ({self.steps_per_iter}) must be >= num_envs ({self.num_envs})"),
            (self.cost_limit is None or self.cost_limit >= 0,
             f"cost_limit must be >= 0, got {self.cost_limit}"),
            (self.estep_kl > 0, f"estep_kl must be > 0, got {self.estep_kl}"),
            (0 <= self.v_lower_bound < 1, f"v_lower_bound must be in [0, 1), got {self.v_lower_bound}"),
            (0 < self.lower_clip < 1 and 0 < self.lower_clip_final < 1,
             "lower_clip and lower_clip_final must be in (0, 1)"),
            (0 <= self.beta <= 1, f"beta must be in [0, 1], got {self.beta}"),
            (self.estep_targets >= 1, f"estep_targets must be >= 1, got {self.estep_targets}"),
            (self.mstep in MSTEPS, f"mstep must be one of {MSTEPS}, got {self.mstep!r}"),
            (0 < self.switch_ratio <= 1, f"switch_ratio must be in (0, 1], got {self.switch_ratio}"),
            (self.cost_control in COST_CONTROLS,
             f"cost_control must be one of {COST_CONTROLS}, got {self.cost_control!r}"),
            (self.cost_control in ("auto", *ALGO_COST_CONTROLS.get(self.algo, ())),
             f"cost_control {self.cost_control!r} does not apply to algo {self.algo!r}: use one of "
             f"{('auto', *ALGO_COST_CONTROLS.get(self.algo, ()))}"),
            (0 < self.rho_min <= self.rho_init <= 1,
             f"need 0 < rho_min <= rho_init <= 1, got {self.rho_min} and {self.rho_init}"),
            (0 <= self.rho_smoothing < 1, f"rho_smoothing must be in [0, 1), got {self.rho_smoothing}"),
            (self.cost_window >= 1, f"cost_window must be >= 1, got {self.cost_window}"),
            (self.pid_ki >= 0 and self.pid_kp >= 0, "pid_ki and pid_kp must be >= 0"),
            (-1 <= self.pid_integral_min <= 1, "pid_integral_min must be in [-1, 1]"),
            (self.pid_error_min < 0, f"pid_error_min must be < 0, got {self.pid_error_min}"),
            (self.pid_noise_ref >= 0 and self.pid_max_speedup >= 1,
             "pid_noise_ref must be >= 0 and pid_max_speedup >= 1"),
            (min(self.pid_lag_kp, self.pid_lag_ki, self.pid_lag_kd) >= 0,
             "pid_lag_kp, pid_lag_ki and pid_lag_kd must be >= 0"),
            (self.pid_lag_d_delay >= 1, f"pid_lag_d_delay must be >= 1, got {self.pid_lag_d_delay}"),
            (0 <= self.pid_lag_ema < 1, f"pid_lag_ema must be in [0, 1), got {self.pid_lag_ema}"),
            (self.pid_integral_min <= self.pid_integral_init <= 1,
             "pid_integral_init must be in [pid_integral_min, 1]"),
            (self.pi_lr > 0 and self.vf_lr > 0, "learning rates must be > 0"),
            (self.update_epochs >= 1 and self.num_minibatches >= 1,
             "update_epochs and num_minibatches must be >= 1"),
            (all(0 < g <= 1 for g in (self.gamma, self.lam, self.cost_gamma, self.cost_lam)),
             "gamma, lam, cost_gamma and cost_lam must be in (0, 1]"),
            (self.model_horizon >= 1, f"model_horizon must be >= 1, got {self.model_horizon}"),
            (0 <= self.imagined_frac <= 10, f"imagined_frac must be in [0, 10], got {self.imagined_frac}"),
            (self.kappa >= 0, f"kappa must be >= 0, got {self.kappa}"),
            (self.imagined_adv in IMAGINED_ADVS,
             f"imagined_adv must be one of {IMAGINED_ADVS}, got {self.imagined_adv!r}"),
            (self.dyna_model in DYNA_MODELS,
             f"dyna_model must be one of {DYNA_MODELS}, got {self.dyna_model!r}"),
            (self.model_rounds >= 0, f"model_rounds must be >= 0, got {self.model_rounds}"),
            (self.model_fit_patience >= 1,
             f"model_fit_patience must be >= 1, got {self.model_fit_patience}"),
            (self.imagined_policy or self.imagined_critics,
             "imagined_policy and imagined_critics are both off: imagined samples would go "
             "unused (set imagined_frac=0 instead)"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Inverse of :meth:`to_dict` (tuples restored; old field names read as today's,
        :data:`RENAMED_FIELDS`; unknown keys rejected with a clear error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        data = renamed_fields(data)
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        for key, before in FIELDS_ADDED_WITH_DEFAULTS.items():  # saved before the field existed
            data.setdefault(key, before)
        if data.get("algo") == "ppo-lag" and data.get("cost_control") in ALGO_COST_CONTROLS["cppo"]:
            data["cost_control"] = "auto"  # saved when ppo-lag ignored the field: its multiplier ran
        for key in ("hidden", "model_hidden"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


#: Fields added with a default that changed what a run does, and the value that reproduces runs
#: saved before them (a resumed old run goes on as it began): the PI controller's error clip
#: and its noise-scaled gains.
FIELDS_ADDED_WITH_DEFAULTS: dict[str, float] = dict(pid_error_min=-2.0, pid_noise_ref=0.0,
                                                    pid_max_speedup=1.0)

#: Cost-control speeds for the toy task: its cost answers a policy change within one iteration
#: (20 short episodes), so the controller and the multiplier may move 10-30x faster than the
#: defaults, which are set for 1000-step Safety-Gymnasium episodes.
#: Its integral may reach -1 (no anti-windup floor): with the linear M-step's larger steps the
#: floor of -0.5 left the toy's cost oscillating 10-25% over its limit (cppo 10.8, dyna-cppo
#: 12.4 against 10, seeds 0 and 2); without it 10.2 for both.
TOY_CONTROL: dict[str, float] = dict(pid_ki=0.3, pid_kp=1.0, pid_integral_min=-1.0, pid_error_min=-2.0,
                                     pid_noise_ref=0.0, lagrangian_lr=0.2)

#: Named training set-ups (``python -m dynacppo_lite train --preset NAME``, flags override them).
#: ``readme`` is what ``make train`` runs (see README); ``figures`` finds its run from it.
TRAIN_PRESETS: dict[str, dict] = {
    "readme": dict(algo="cppo", env_id="SafetyPointCircle1-v0", total_steps=1_000_000, num_envs=2,
                   steps_per_iter=8_000, device="cpu", run_name="readme_cppo_PointCircle1"),
    "smoke": dict(algo="cppo", env_id="ToySpeedLimit-v0", total_steps=20_000, num_envs=1,
                  steps_per_iter=1_000, run_name="smoke_cppo_toy", **TOY_CONTROL),
}
