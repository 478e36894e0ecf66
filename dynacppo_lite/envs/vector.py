"""Lean vector envs for the package's own 6-tuple envs: :class:`SyncSafeVectorEnv` and
:class:`AsyncSafeVectorEnv`.

They step exactly like today's gymnasium stack (``SyncVectorEnv``/``AsyncVectorEnv`` of
``CostInInfo`` envs under :class:`~dynacppo_lite.envs.wrappers.SafeVectorEnv`) and give the same
numbers, but without its per-step work that this package never reads. Measured on
SafetyPointCircle1-v0 (one env, in process, random actions): that stack spent about as long
around the env as in it, on per-env info dicts merged into batched ones (``_add_info``),
``concatenate`` + ``deepcopy`` of the observations, the ``CostInInfo`` wrapper and the cost
gathered back out of the info arrays. What is kept:

* ``step(actions) -> (obs, reward, cost, terminated, truncated, info)``, each batched over the
  ``num_envs`` envs: obs (N, obs_dim), the rest (N,) (float64 reward and cost, bool flags);
* gymnasium's autoreset: when env ``i`` ends, ``obs[i]`` is the first observation of its next
  episode, ``info["final_observation"][i]`` the true last one (an object array as gymnasium's,
  ``None`` where no episode ended) and ``info["_final_observation"]`` the mask;
* episode statistics of the raw rewards and costs: ``info["episode"]`` with arrays ``r``, ``c``,
  ``l`` and the mask ``info["_episode"]``, as :class:`SafeVectorEnv` records them;
* ``reset(seed=s)`` seeds env ``i`` with ``s + i`` (the first reset uses the constructor's seed);
  batched and single action and observation spaces; ``call`` (e.g. ``call("render")``); close.

What is dropped: the sub-envs' own info keys (``cost_hazards``, ``goal_met``, ``final_info``
...), which nothing in the package reads, except one on request: with ``record_state=True``
each sub-env's reset and step infos carry ``info["state"]``, a (D,) float64 row (the coordinate
state, ``envs.coordinates.RecordCoordinates``), and the vector env hands out ``info["state"]``
(N, D) after every reset and step and, where an episode ended, ``info["final_state"]`` (N, D):
the row of the state the episode ended in (rows valid where ``_final_observation``). They pass
through shared memory like the observations.

The async env's layout (issue #14). Its envs are split into contiguous groups, one per stepper:
this process steps the first group itself (``in_process``, the default) while each of
``num_workers`` worker processes steps its own group, one env after the other. Actions,
observations, rewards, costs, flags and final observations pass through shared memory; a step
command is a single byte written to each worker's connection (the action dtype's character), and
a single byte comes back. The default is one stepper per core, at most one per env
(:func:`default_num_workers`): on 2 cores, 2 envs are this process + 1 worker and 16 envs are
this process + 1 worker with 8 each. Why, measured on 2 cores (random actions, resets
included, the layouts interleaved in one process; steps/s as a fraction of one raw env's in the
same process; two runs each, while two to four training runs kept the cores busy, load 2.4-5.3):

* one worker per env, this process only waiting (the layout before): 0.36-0.50 of raw for 2
  envs on ``SafetyPointCircle1-v0`` (332-482 us per vector step against 82-86 us per raw env
  step), 0.42-0.57 for 4; 0.66-0.67 and 0.50-0.66 on ``SafetyPointGoal1-v0`` (a 180 us step);
* the same layout signalling one raw byte instead of a pickled ``(command, data)`` message
  through ``Connection.send``/``recv``: 1.0-1.7x faster (a round trip to a worker took 6 us
  against 21 us, 17 us with ``send_bytes``);
* this process stepping its share, one stepper per core: 0.68-0.72 (2 envs) and 0.81-0.83 (4
  envs, two groups of 2) on PointCircle1, 0.80-0.82 and 0.82-0.88 on PointGoal1, 1.2x-2.0x the
  layout before; 4 envs on this process + 3 workers were slower (0.51-0.77 and 0.57-0.69);
  16 envs on PointCircle1: 2.0x the layout before (10,979 against 5,538 steps/s); cppo
  training with 2 envs (``bench throughput --algos cppo --workers 2``): 1.4-1.5x on
  PointCircle1, 1.07-1.08x on PointGoal1.

An idle machine was not at hand for these runs.

No stepper spins while it waits (both ends block in ``read``), so the cores stay free for the
other steppers and the policy. On cores that other work keeps busy every wake-up waits for a
core, so up to 4 envs stepping them all here (:class:`SyncSafeVectorEnv`,
``make_env(num_workers=0)``) was faster still in those runs (0.86-1.01 of raw); with 16 envs
the default layout beat it (9,732 steps/s).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import CloudpickleWrapper

#: A factory of one env whose ``step`` returns ``(obs, reward, cost, terminated, truncated, info)``.
EnvFactory = Callable[[], gym.Env]


def _seeds(seed: int | Sequence[int | None] | None, n: int) -> list[int | None]:
    """Per-env reset seeds as gymnasium's vector envs derive them: ``seed + i`` from an int."""
    if seed is None:
        return [None] * n
    if isinstance(seed, int | np.integer):
        return [int(seed) + i for i in range(n)]
    if len(seed) != n:
        raise ValueError(f"reset needs {n} seeds, got {len(seed)}")
    return list(seed)


def _reset_kwargs(seeds: list[int | None], options: dict | None) -> list[dict[str, Any]]:
    """``env.reset`` keyword arguments of each env: no ``seed`` key where its seed is None."""
    out = []
    for s in seeds:
        kwargs: dict[str, Any] = {} if s is None else {"seed": s}
        if options is not None:
            kwargs["options"] = options
        out.append(kwargs)
    return out


class _EnvGroup:
    """Envs ``lo .. lo + len(envs) - 1`` of a vector env, stepped one after the other by their
    owner (the sync env, the async env's own process or one of its workers), which write their
    results into rows ``lo ..`` of the batch arrays."""

    def __init__(self, envs: list[gym.Env], lo: int, arrays: dict[str, np.ndarray]) -> None:
        self.envs, self.lo, self.hi = envs, lo, lo + len(envs)
        self._obs, self._final = arrays["obs"], arrays["final"]
        self._rew, self._cost = arrays["rew"], arrays["cost"]
        self._term, self._trunc = arrays["term"], arrays["trunc"]
        self._state, self._final_state = arrays.get("state"), arrays.get("final_state")

    def step(self, actions: np.ndarray) -> None:
        """Step env ``lo + j`` with ``actions[j]``; autoreset the envs that ended."""
        state = self._state
        for i, env, act in zip(range(self.lo, self.hi), self.envs, actions, strict=True):
            obs, self._rew[i], self._cost[i], term, trunc, info = env.step(act)
            self._term[i], self._trunc[i] = term, trunc
            if term or trunc:
                self._final[i] = obs
                if state is not None:
                    self._final_state[i] = info["state"]
                obs, info = env.reset()
            self._obs[i] = obs
            if state is not None:
                state[i] = info["state"]

    def reset(self, kwargs: list[dict[str, Any]]) -> None:
        for i, env, kw in zip(range(self.lo, self.hi), self.envs, kwargs, strict=True):
            self._obs[i], info = env.reset(**kw)
            if self._state is not None:
                self._state[i] = info["state"]

    def call(self, name: str, args: tuple, kwargs: dict) -> list[Any]:
        out = []
        for env in self.envs:
            attr = getattr(env, name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return out

    def close(self) -> None:
        for env in self.envs:
            env.close()


class _SafeVectorBase(gym.vector.VectorEnv):
    """Batched arrays, episode statistics and the info dict shared by the sync and async envs.

    Subclasses fill ``self._obs`` (N, obs_dim), ``self._rew``, ``self._cost``, ``self._term``,
    ``self._trunc`` (N,) and, for envs that ended, ``self._final`` (N, obs_dim) in
    :meth:`_step_envs` / :meth:`_reset_envs`; with a recorded state also ``self._state`` and
    ``self._final_state`` (N, D). ``state_spec``: what the sub-envs say their state rows are
    (their ``state_spec``, None without ``record_state``).
    """

    def __init__(self, num_envs: int, observation_space: gym.Space, action_space: gym.Space,
                 seed: int | None, buffers: dict[str, np.ndarray], state_spec: Any = None) -> None:
        super().__init__(num_envs, observation_space, action_space)
        self._first_seed = seed
        self._obs, self._final = buffers["obs"], buffers["final"]
        self._rew, self._cost = buffers["rew"], buffers["cost"]
        self._term, self._trunc = buffers["term"], buffers["trunc"]
        self._state, self._final_state = buffers.get("state"), buffers.get("final_state")
        self.state_spec = state_spec
        self._ep_ret = np.zeros(num_envs)
        self._ep_cost = np.zeros(num_envs)
        self._ep_len = np.zeros(num_envs, dtype=np.int64)
        self._action_shape = (num_envs, *action_space.shape)

    @staticmethod
    def _buffers(num_envs: int, obs_space: gym.Space, alloc: Callable[[tuple, Any], np.ndarray],
                 state_dim: int = 0) -> dict[str, np.ndarray]:
        obs_shape, obs_dtype = (num_envs, *obs_space.shape), obs_space.dtype
        out = {"obs": alloc(obs_shape, obs_dtype), "final": alloc(obs_shape, obs_dtype),
               "rew": alloc((num_envs,), np.float64), "cost": alloc((num_envs,), np.float64),
               "term": alloc((num_envs,), np.bool_), "trunc": alloc((num_envs,), np.bool_)}
        if state_dim:
            out["state"] = alloc((num_envs, state_dim), np.float64)
            out["final_state"] = alloc((num_envs, state_dim), np.float64)
        return out

    def _reset_envs(self, seeds: list[int | None], options: dict | None) -> None:
        raise NotImplementedError

    def _step_envs(self, actions: np.ndarray) -> None:
        raise NotImplementedError

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Reset every env; returns obs (N, obs_dim) and an empty info dict."""
        # The first reset uses make_env's seed, so make_env(seed=s).reset() is reproducible.
        if seed is None and self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        self._reset_envs(_seeds(seed, self.num_envs), options)
        self._ep_ret[:] = 0.0
        self._ep_cost[:] = 0.0
        self._ep_len[:] = 0
        return self._obs.copy(), ({} if self._state is None else {"state": self._state.copy()})

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                  np.ndarray, dict]:
        """Step every env with ``actions`` (N, act_dim); autoreset envs that ended."""
        actions = np.asarray(actions)
        if actions.shape != self._action_shape:
            raise ValueError(f"actions of shape {actions.shape}, expected {self._action_shape}")
        self._step_envs(actions)
        rew, cost = self._rew.copy(), self._cost.copy()
        term, trunc = self._term.copy(), self._trunc.copy()
        self._ep_ret += rew
        self._ep_cost += cost
        self._ep_len += 1
        info: dict[str, Any] = {}
        if self._state is not None:
            info["state"] = self._state.copy()
        done = term | trunc
        if np.count_nonzero(done):  # ndarray.any() costs ~2 us on (N,) arrays, this ~0.1 us
            final = np.empty(self.num_envs, dtype=object)
            for i in np.flatnonzero(done):
                final[i] = self._final[i].copy()
            info["final_observation"], info["_final_observation"] = final, done
            if self._state is not None:
                info["final_state"] = self._final_state.copy()
            info["episode"] = {"r": np.where(done, self._ep_ret, 0.0),
                               "c": np.where(done, self._ep_cost, 0.0),
                               "l": np.where(done, self._ep_len, 0)}
            info["_episode"] = done
            self._ep_ret[done] = 0.0
            self._ep_cost[done] = 0.0
            self._ep_len[done] = 0
        return self._obs.copy(), rew, cost, term, trunc, info


class SyncSafeVectorEnv(_SafeVectorBase):
    """The envs stepped one after the other in this process (``envs`` lists them).
    ``record_state``: collect the sub-envs' ``info["state"]`` (module docstring)."""

    def __init__(self, factories: Sequence[EnvFactory], seed: int | None = None, *,
                 record_state: bool = False) -> None:
        envs = [f() for f in factories]
        first = envs[0]
        n = len(envs)
        state_dim, state_spec = _state_of(first, record_state)
        buffers = self._buffers(n, first.observation_space, lambda shape, dt: np.zeros(shape, dt),
                                state_dim)
        super().__init__(n, first.observation_space, first.action_space, seed, buffers, state_spec)
        self._group = _EnvGroup(envs, 0, buffers)
        self.envs = envs
        self.metadata = first.metadata
        self.render_mode = first.render_mode

    def _reset_envs(self, seeds: list[int | None], options: dict | None) -> None:
        self._group.reset(_reset_kwargs(seeds, options))

    def _step_envs(self, actions: np.ndarray) -> None:
        self._group.step(actions)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple:
        """``getattr(env, name)(*args, **kwargs)`` (or the attribute) of every env."""
        return tuple(self._group.call(name, args, kwargs))

    def close_extras(self, **kwargs: Any) -> None:
        self._group.close()


def _state_of(env: gym.Env, record_state: bool) -> tuple[int, Any]:
    """(D, state_spec) of the state rows ``env`` puts in its infos; (0, None) unless recorded."""
    if not record_state:
        return 0, None
    if not hasattr(env, "state_dim"):
        raise ValueError(f"record_state needs envs that record a state (state_dim, "
                         f"info['state']), not {env}")
    return int(env.state_dim), env.state_spec


def _shared(ctx: Any, shape: tuple, dtype: Any) -> tuple[Any, tuple, np.dtype]:
    """A shared-memory block for an array of ``shape`` and ``dtype`` (zeroed)."""
    dtype = np.dtype(dtype)
    return ctx.RawArray("b", int(np.prod(shape)) * dtype.itemsize), shape, dtype


def _view(block: tuple[Any, tuple, np.dtype]) -> np.ndarray:
    raw, shape, dtype = block
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


#: A step command is one byte written straight to the worker's connection: the action dtype's
#: character (``b"f"``, ``b"d"``); the worker answers ``_DONE``. Any other message, either way,
#: is ``_MSG`` then a pickled ``(command, data)`` or ``(status, payload)`` framed by
#: ``Connection``. (A round trip of one raw byte costs about a third of a pickled message's.)
_MSG, _DONE = b"\0", b"k"


def _post(conn: Connection, message: tuple[str, Any]) -> None:
    data = ForkingPickler.dumps(message)  # before the tag: a message that fails to pickle sends nothing
    os.write(conn.fileno(), _MSG)
    conn.send_bytes(data)


def _receive(conn: Connection) -> tuple[str, Any]:
    """A worker's answer: ``("ok", payload)`` or ``("error", (exception, traceback))``."""
    tag = os.read(conn.fileno(), 1)
    if tag == _DONE:
        return "ok", None
    if not tag:
        raise EOFError("an AsyncSafeVectorEnv worker exited")
    return conn.recv()


def _worker(lo: int, factories: list[CloudpickleWrapper], conn: Connection, parent: Connection,
            blocks: dict[str, tuple]) -> None:
    """Own envs ``lo, lo + 1, ...``: read their action rows, write their results into the shared
    arrays."""
    parent.close()
    arrays = {k: _view(b) for k, b in blocks.items()}
    fd = conn.fileno()
    group = None
    try:
        group = _EnvGroup([f() for f in factories], lo, arrays)
        act = arrays["act"][lo:group.hi]
        _post(conn, ("ok", None))
        while True:
            tag = os.read(fd, 1)
            if not tag:  # the parent is gone
                break
            if tag != _MSG:
                group.step(act.astype(tag.decode()))
                os.write(fd, _DONE)
                continue
            command, data = conn.recv()
            if command == "reset":
                group.reset(data)
                _post(conn, ("ok", None))
            elif command == "call":
                _post(conn, ("ok", group.call(*data)))
            elif command == "close":
                _post(conn, ("ok", None))
                break
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent handles it
        pass
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent
        try:
            _post(conn, ("error", (exc, traceback.format_exc())))
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            _post(conn, ("error", (RuntimeError(repr(exc)), traceback.format_exc())))
    finally:
        if group is not None:
            group.close()
        conn.close()


def _cpus() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_num_workers(num_envs: int, in_process: bool = True) -> int:
    """Worker processes for ``num_envs`` envs: one stepper (a worker, or this process when
    ``in_process``) per core, at most one per env."""
    return min(num_envs, _cpus()) - int(in_process)


def _groups(n: int, k: int) -> list[range]:
    """``n`` envs in ``k`` contiguous groups whose sizes differ by at most one, the smaller
    first: group 0 may be the calling process's, which also runs the policy between steps."""
    sizes = [n // k + (g >= k - n % k) for g in range(k)]
    starts = list(itertools.accumulate(sizes, initial=0))
    return [range(starts[g], starts[g + 1]) for g in range(k)]


class AsyncSafeVectorEnv(_SafeVectorBase):
    """Envs stepped in parallel by ``num_workers`` worker processes, each owning a contiguous
    group of them, and (``in_process``, the default) by this process, which steps the first
    group itself while the workers step theirs. Results come back through shared-memory arrays.

    ``num_workers`` defaults to :func:`default_num_workers`: one stepper per core. An exception
    from an env is raised here again (same type) and the vector env is closed; a worker's
    carries the worker's traceback as its note. ``record_state``: collect the sub-envs'
    ``info["state"]`` (module docstring).
    """

    def __init__(self, factories: Sequence[EnvFactory], seed: int | None = None,
                 context: str | None = None, *, num_workers: int | None = None,
                 in_process: bool = True, record_state: bool = False) -> None:
        n = len(factories)
        if num_workers is None:
            num_workers = default_num_workers(n, in_process)
        steppers = num_workers + int(in_process)
        if num_workers < 0 or not 1 <= steppers <= n:
            raise ValueError(f"{n} envs cannot be shared by {num_workers} workers"
                             + (" and this process" if in_process else ""))
        groups = _groups(n, steppers)
        own = groups.pop(0) if in_process else range(0)
        ctx = mp.get_context(context)
        envs = [factories[i]() for i in own]
        # Spaces come from an env made here (the buffers must exist before the workers): this
        # process's first env, else a probe.
        first = envs[0] if envs else factories[0]()
        obs_space, act_space = first.observation_space, first.action_space
        self.metadata, self.render_mode = first.metadata, first.render_mode
        state_dim, state_spec = _state_of(first, record_state)
        if not envs:
            first.close()
        blocks = {k: _shared(ctx, a.shape, a.dtype)
                  for k, a in self._buffers(n, obs_space, np.empty, state_dim).items()}
        # float64 holds float32 or float64 actions exactly; each step tells the workers the dtype.
        blocks["act"] = _shared(ctx, (n, *act_space.shape), np.float64)
        arrays = {k: _view(b) for k, b in blocks.items()}
        self._act = arrays["act"]
        self._own = _EnvGroup(envs, 0, arrays)
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for g, envs_g in enumerate(groups):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, name=f"SafeVectorEnv-{g}", daemon=True,
                               args=(envs_g.start, [CloudpickleWrapper(factories[i]) for i in envs_g],
                                     child, parent, blocks))
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._fds = [conn.fileno() for conn in self._conns]
        self._groups = groups
        super().__init__(n, obs_space, act_space, seed, arrays, state_spec)
        self._gather()  # every env is built

    @property
    def num_workers(self) -> int:
        """Worker processes (this process's own envs aside)."""
        return len(self._procs)

    def _gather(self) -> list[Any]:
        """Every worker's answer to the last command; raise the first worker error."""
        answers = [_receive(conn) for conn in self._conns]
        for status, payload in answers:
            if status == "error":
                exc, trace = payload
                self.close(terminate=True)
                if hasattr(exc, "add_note"):  # Python >= 3.11
                    exc.add_note(f"in an AsyncSafeVectorEnv worker:\n{trace}")
                raise exc
        return [payload for _, payload in answers]

    def _run_own(self, method: Callable[..., Any], *args: Any) -> Any:
        """``method`` of this process's envs, run while the workers run theirs; an error closes
        the vector env, as a worker's does."""
        try:
            return method(*args)
        except Exception:
            self.close(terminate=True)
            raise

    def _reset_envs(self, seeds: list[int | None], options: dict | None) -> None:
        kwargs = _reset_kwargs(seeds, options)
        for conn, envs in zip(self._conns, self._groups, strict=True):
            _post(conn, ("reset", kwargs[envs.start:envs.stop]))
        self._run_own(self._own.reset, kwargs[:self._own.hi])
        self._gather()

    def _step_envs(self, actions: np.ndarray) -> None:
        split = self._own.hi
        self._act[split:] = actions[split:]
        tag = actions.dtype.char.encode()
        for fd in self._fds:
            os.write(fd, tag)
        self._run_own(self._own.step, actions[:split])
        self._gather()

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple:
        """``getattr(env, name)(*args, **kwargs)`` (or the attribute) of every env."""
        for conn in self._conns:
            _post(conn, ("call", (name, args, kwargs)))
        own = self._run_own(self._own.call, name, args, kwargs)
        return tuple(own + [x for part in self._gather() for x in part])

    def close_extras(self, timeout: float = 5.0, terminate: bool = False) -> None:
        asked = []
        if not terminate:
            for conn, proc in zip(self._conns, self._procs, strict=True):
                if proc.is_alive():
                    try:
                        _post(conn, ("close", None))
                        asked.append(conn)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
        self._own.close()
        for conn in asked:
            try:
                _receive(conn)
            except (EOFError, ConnectionResetError):
                pass
        for proc in self._procs:
            proc.join(timeout if not terminate else 0)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for conn in self._conns:
            conn.close()
