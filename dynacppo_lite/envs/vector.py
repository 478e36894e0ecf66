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
...), which nothing in the package reads. The async env runs one env per worker process and
passes actions, observations, rewards, costs, flags and final observations through shared
memory; the pipe to each worker carries only the command.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
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


class _SafeVectorBase(gym.vector.VectorEnv):
    """Batched arrays, episode statistics and the info dict shared by the sync and async envs.

    Subclasses fill ``self._obs`` (N, obs_dim), ``self._rew``, ``self._cost``, ``self._term``,
    ``self._trunc`` (N,) and, for envs that ended, ``self._final`` (N, obs_dim) in
    :meth:`_step_envs` / :meth:`_reset_envs`.
    """

    def __init__(self, num_envs: int, observation_space: gym.Space, action_space: gym.Space,
                 seed: int | None, buffers: dict[str, np.ndarray]) -> None:
        super().__init__(num_envs, observation_space, action_space)
        self._first_seed = seed
        self._obs, self._final = buffers["obs"], buffers["final"]
        self._rew, self._cost = buffers["rew"], buffers["cost"]
        self._term, self._trunc = buffers["term"], buffers["trunc"]
        self._ep_ret = np.zeros(num_envs)
        self._ep_cost = np.zeros(num_envs)
        self._ep_len = np.zeros(num_envs, dtype=np.int64)
        self._action_shape = (num_envs, *action_space.shape)

    @staticmethod
    def _buffers(num_envs: int, obs_space: gym.Space, alloc: Callable[[tuple, Any], np.ndarray]
                 ) -> dict[str, np.ndarray]:
        obs_shape, obs_dtype = (num_envs, *obs_space.shape), obs_space.dtype
        return {"obs": alloc(obs_shape, obs_dtype), "final": alloc(obs_shape, obs_dtype),
                "rew": alloc((num_envs,), np.float64), "cost": alloc((num_envs,), np.float64),
                "term": alloc((num_envs,), np.bool_), "trunc": alloc((num_envs,), np.bool_)}

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
        return self._obs.copy(), {}

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
        done = term | trunc
        if np.count_nonzero(done):  # ndarray.any() costs ~2 us on (N,) arrays, this ~0.1 us
            final = np.empty(self.num_envs, dtype=object)
            for i in np.flatnonzero(done):
                final[i] = self._final[i].copy()
            info["final_observation"], info["_final_observation"] = final, done
            info["episode"] = {"r": np.where(done, self._ep_ret, 0.0),
                               "c": np.where(done, self._ep_cost, 0.0),
                               "l": np.where(done, self._ep_len, 0)}
            info["_episode"] = done
            self._ep_ret[done] = 0.0
            self._ep_cost[done] = 0.0
            self._ep_len[done] = 0
        return self._obs.copy(), rew, cost, term, trunc, info


class SyncSafeVectorEnv(_SafeVectorBase):
    """The envs stepped one after the other in this process (``envs`` lists them)."""

    def __init__(self, factories: Sequence[EnvFactory], seed: int | None = None) -> None:
        self.envs = [f() for f in factories]
        first = self.envs[0]
        n = len(self.envs)
        buffers = self._buffers(n, first.observation_space, lambda shape, dt: np.zeros(shape, dt))
        super().__init__(n, first.observation_space, first.action_space, seed, buffers)
        self.metadata = first.metadata
        self.render_mode = first.render_mode

    def _reset_envs(self, seeds: list[int | None], options: dict | None) -> None:
        for i, (env, s) in enumerate(zip(self.envs, seeds, strict=True)):
            kwargs: dict[str, Any] = {} if s is None else {"seed": s}
            if options is not None:
                kwargs["options"] = options
            self._obs[i], _ = env.reset(**kwargs)

    def _step_envs(self, actions: np.ndarray) -> None:
        for i, env in enumerate(self.envs):
            obs, self._rew[i], self._cost[i], term, trunc, _ = env.step(actions[i])
            self._term[i], self._trunc[i] = term, trunc
            if term or trunc:
                self._final[i] = obs
                obs, _ = env.reset()
            self._obs[i] = obs

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple:
        """``getattr(env, name)(*args, **kwargs)`` (or the attribute) of every env."""
        out = []
        for env in self.envs:
            attr = getattr(env, name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(out)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def _shared(ctx: Any, shape: tuple, dtype: Any) -> tuple[Any, tuple, np.dtype]:
    """A shared-memory block for an array of ``shape`` and ``dtype`` (zeroed)."""
    dtype = np.dtype(dtype)
    return ctx.RawArray("b", int(np.prod(shape)) * dtype.itemsize), shape, dtype


def _view(block: tuple[Any, tuple, np.dtype]) -> np.ndarray:
    raw, shape, dtype = block
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _worker(index: int, factory: CloudpickleWrapper, conn: Connection, parent: Connection,
            blocks: dict[str, tuple]) -> None:
    """Own env ``index``: read its action row, write its results into the shared arrays."""
    parent.close()
    arr = {k: _view(b) for k, b in blocks.items()}
    act, obs_buf, final = arr["act"][index], arr["obs"], arr["final"]
    rew, cost, term, trunc = arr["rew"], arr["cost"], arr["term"], arr["trunc"]
    env = None
    try:
        env = factory()
        conn.send(("ok", None))
        while True:
            command, data = conn.recv()
            if command == "step":
                o, rew[index], cost[index], te, tr, _ = env.step(act.astype(data))
                term[index], trunc[index] = te, tr
                if te or tr:
                    final[index] = o
                    o, _ = env.reset()
                obs_buf[index] = o
                conn.send(("ok", None))
            elif command == "reset":
                obs_buf[index], _ = env.reset(**data)
                conn.send(("ok", None))
            elif command == "call":
                name, args, kwargs = data
                attr = getattr(env, name)
                conn.send(("ok", attr(*args, **kwargs) if callable(attr) else attr))
            elif command == "close":
                conn.send(("ok", None))
                break
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent handles it
        pass
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent
        try:
            conn.send(("error", (exc, traceback.format_exc())))
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            conn.send(("error", (RuntimeError(repr(exc)), traceback.format_exc())))
    finally:
        if env is not None:
            env.close()
        conn.close()


class AsyncSafeVectorEnv(_SafeVectorBase):
    """One worker process per env; results come back through shared-memory arrays.

    A worker's exception is raised here again (same type) with the worker's traceback as its
    note; the env is closed then.
    """

    def __init__(self, factories: Sequence[EnvFactory], seed: int | None = None,
                 context: str | None = None) -> None:
        ctx = mp.get_context(context)
        n = len(factories)
        # Spaces come from a probe env made here: the buffers must exist before the workers.
        probe = factories[0]()
        obs_space, act_space = probe.observation_space, probe.action_space
        self.metadata, self.render_mode = probe.metadata, probe.render_mode
        probe.close()
        blocks = {k: _shared(ctx, a.shape, a.dtype)
                  for k, a in self._buffers(n, obs_space, np.empty).items()}
        # float64 holds float32 or float64 actions exactly; each step tells the worker the dtype.
        blocks["act"] = _shared(ctx, (n, *act_space.shape), np.float64)
        self._act = _view(blocks["act"])
        self._pipes: list[Connection] = []
        self._procs: list[Any] = []
        for i, factory in enumerate(factories):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, name=f"SafeVectorEnv-{i}", daemon=True,
                               args=(i, CloudpickleWrapper(factory), child, parent, blocks))
            proc.start()
            child.close()
            self._pipes.append(parent)
            self._procs.append(proc)
        super().__init__(n, obs_space, act_space, seed, {k: _view(b) for k, b in blocks.items()})
        self._gather()  # every env is built

    def _gather(self) -> list[Any]:
        """Every worker's answer to the last command; raise the first worker error."""
        answers = [pipe.recv() for pipe in self._pipes]
        for status, payload in answers:
            if status == "error":
                exc, trace = payload
                self.close(terminate=True)
                if hasattr(exc, "add_note"):  # Python >= 3.11
                    exc.add_note(f"in an AsyncSafeVectorEnv worker:\n{trace}")
                raise exc
        return [payload for _, payload in answers]

    def _send(self, command: str, data: Any) -> list[Any]:
        for pipe in self._pipes:
            pipe.send((command, data))
        return self._gather()

    def _reset_envs(self, seeds: list[int | None], options: dict | None) -> None:
        for pipe, s in zip(self._pipes, seeds, strict=True):
            kwargs: dict[str, Any] = {} if s is None else {"seed": s}
            if options is not None:
                kwargs["options"] = options
            pipe.send(("reset", kwargs))
        self._gather()

    def _step_envs(self, actions: np.ndarray) -> None:
        self._act[:] = actions
        self._send("step", actions.dtype.str)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple:
        """``getattr(env, name)(*args, **kwargs)`` (or the attribute) of every env."""
        return tuple(self._send("call", (name, args, kwargs)))

    def close_extras(self, timeout: float = 5.0, terminate: bool = False) -> None:
        if not terminate:
            for pipe, proc in zip(self._pipes, self._procs, strict=True):
                if proc.is_alive():
                    try:
                        pipe.send(("close", None))
                        pipe.recv()
                    except (EOFError, BrokenPipeError, ConnectionResetError):
                        pass
        for proc in self._procs:
            proc.join(timeout if not terminate else 0)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for pipe in self._pipes:
            pipe.close()
