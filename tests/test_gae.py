"""Dual GAE against a plain-Python reference written as forward sums over each episode piece."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacppo_lite.gae import dual_gae, gae


def reference_gae(rew, val, next_val, term, trunc, gamma: float, lam: float) -> np.ndarray:
    """A_t = sum_{k >= t} (gamma lam)^(k - t) delta_k up to the first k that ends an episode (or
    the last step), delta_k = r_k + gamma V(s_{k+1}) [0 if terminated] - V(s_k). (T, E) lists."""
    steps, envs = len(rew), len(rew[0])
    adv = [[0.0] * envs for _ in range(steps)]
    for e in range(envs):
        for t in range(steps):
            total, weight = 0.0, 1.0
            for k in range(t, steps):
                boot = 0.0 if term[k][e] else gamma * next_val[k][e]
                total += weight * (rew[k][e] + boot - val[k][e])
                if term[k][e] or trunc[k][e]:
                    break
                weight *= gamma * lam
            adv[t][e] = total
    return np.array(adv)


def rollout(steps: int, envs: int, seed: int) -> dict[str, np.ndarray]:
    """Random data with both kinds of episode end, at different steps in different envs."""
    rng = np.random.default_rng(seed)
    u = rng.random((steps, envs))
    return {"rew": rng.standard_normal((steps, envs)), "cost": rng.random((steps, envs)),
            "v_r": rng.standard_normal((steps, envs)), "v_c": rng.random((steps, envs)),
            "nv_r": rng.standard_normal((steps, envs)), "nv_c": rng.random((steps, envs)),
            "term": u < 0.1, "trunc": (u > 0.88) & (u < 0.98)}


def check_against_reference(ro: dict[str, np.ndarray], out, as_numpy) -> None:
    for adv, ret, r, v, nv, g, lam in (
            (out.adv_r, out.ret_r, ro["rew"], ro["v_r"], ro["nv_r"], 0.99, 0.97),
            (out.adv_c, out.ret_c, ro["cost"], ro["v_c"], ro["nv_c"], 0.9, 0.8)):
        want = reference_gae(r.tolist(), v.tolist(), nv.tolist(), ro["term"].tolist(),
                             ro["trunc"].tolist(), g, lam)
        np.testing.assert_allclose(as_numpy(adv), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(as_numpy(ret), want + v, rtol=1e-5, atol=1e-5)


KW = {"gamma": 0.99, "lam": 0.97, "cost_gamma": 0.9, "cost_lam": 0.8}


def test_numpy_multi_env_matches_reference() -> None:
    ro = rollout(40, 5, seed=0)
    assert ro["term"].any() and ro["trunc"].any() and (ro["term"] & ro["trunc"]).sum() == 0
    out = dual_gae(ro["rew"], ro["cost"], ro["v_r"], ro["v_c"], ro["nv_r"], ro["nv_c"],
                   ro["term"], ro["trunc"], **KW)
    assert isinstance(out.adv_r, np.ndarray) and out.adv_r.dtype == np.float64
    check_against_reference(ro, out, np.asarray)


def test_numpy_single_env_shape_t() -> None:
    ro = rollout(30, 1, seed=1)
    flat = {k: v[:, 0] for k, v in ro.items()}
    out = dual_gae(flat["rew"], flat["cost"], flat["v_r"], flat["v_c"], flat["nv_r"],
                   flat["nv_c"], flat["term"], flat["trunc"], **KW)
    assert out.adv_r.shape == (30,)
    check_against_reference(ro, out, lambda x: np.asarray(x)[:, None])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_matches_reference_and_keeps_kind(dtype: torch.dtype) -> None:
    ro = rollout(25, 3, seed=2)
    t = {k: torch.as_tensor(v, dtype=dtype if v.dtype != bool else torch.bool)
         for k, v in ro.items()}
    out = dual_gae(t["rew"], t["cost"], t["v_r"], t["v_c"], t["nv_r"], t["nv_c"], t["term"],
                   t["trunc"], **KW)
    for x in (out.adv_r, out.adv_c, out.ret_r, out.ret_c):
        assert isinstance(x, torch.Tensor) and x.dtype == dtype and x.device == t["rew"].device
    check_against_reference(ro, out, lambda x: x.double().numpy())


def test_float_flags_equal_bool_flags() -> None:
    ro = rollout(20, 2, seed=3)
    args = (ro["rew"], ro["v_r"], ro["nv_r"])
    as_bool = gae(*args, ro["term"], ro["trunc"], gamma=0.99, lam=0.95)
    as_float = gae(*args, ro["term"].astype(float), ro["trunc"].astype(float), gamma=0.99,
                   lam=0.95)
    np.testing.assert_array_equal(as_bool, as_float)


def test_truncation_bootstraps_and_termination_does_not() -> None:
    """The same end flagged as truncated differs from terminated by gamma V(final obs) at that
    step, and the difference decays by gamma lam per step before it; after it, nothing changes."""
    ro = rollout(12, 1, seed=4)
    args = (ro["rew"][:, 0], ro["v_r"][:, 0], ro["nv_r"][:, 0])
    none = np.zeros(12, dtype=bool)
    end = none.copy()
    end[6] = True
    truncated = gae(*args, none, end, gamma=0.99, lam=0.9)
    terminated = gae(*args, end, none, gamma=0.99, lam=0.9)
    diff = truncated - terminated
    want = 0.99 * ro["nv_r"][6, 0] * (0.99 * 0.9) ** np.arange(6, -1, -1)
    np.testing.assert_allclose(diff[:7], want, rtol=1e-12)
    np.testing.assert_array_equal(diff[7:], 0.0)
    assert abs(diff[6]) > 1e-3


def test_recursion_stops_at_episode_ends() -> None:
    """Changing anything after an end leaves the advantages up to it unchanged."""
    ro = rollout(15, 1, seed=5)
    rew, val, nv = ro["rew"][:, 0], ro["v_r"][:, 0], ro["nv_r"][:, 0]
    for flag in ("term", "trunc"):
        flags = {"term": np.zeros(15, dtype=bool), "trunc": np.zeros(15, dtype=bool)}
        flags[flag][7] = True
        before = gae(rew, val, nv, flags["term"], flags["trunc"], gamma=0.99, lam=0.97)
        rew2, val2, nv2 = rew.copy(), val.copy(), nv.copy()
        rew2[8:] += 5.0
        val2[8:] -= 3.0
        nv2[8:] += 2.0
        after = gae(rew2, val2, nv2, flags["term"], flags["trunc"], gamma=0.99, lam=0.97)
        np.testing.assert_array_equal(before[:8], after[:8])


@pytest.mark.parametrize(("bad", "match"), [
    ({"v_r": np.zeros((10, 2))}, "shape"),
    ({"term": np.zeros(9, dtype=bool)}, "shape"),
    ({"rew": np.zeros((10, 3, 1))}, r"\(T,\)"),
    ({"rew": np.zeros(0)}, "T >= 1"),
])
def test_bad_shapes_raise(bad: dict, match: str) -> None:
    base = {"rew": np.zeros(10), "v_r": np.zeros(10), "nv_r": np.zeros(10),
            "term": np.zeros(10, dtype=bool), "trunc": np.zeros(10, dtype=bool)}
    args = {**base, **bad}
    with pytest.raises(ValueError, match=match):
        gae(args["rew"], args["v_r"], args["nv_r"], args["term"], args["trunc"], gamma=0.99,
            lam=0.95)


def test_costs_must_match_rewards() -> None:
    z = np.zeros(10)
    with pytest.raises(ValueError, match="shape"):
        dual_gae(z, np.zeros(11), z, np.zeros(11), z, np.zeros(11), z, z, **KW)


@pytest.mark.parametrize(("gamma", "lam"), [(1.1, 0.9), (0.9, -0.1)])
def test_bad_discounts_raise(gamma: float, lam: float) -> None:
    z = np.zeros(5)
    with pytest.raises(ValueError, match="must lie in"):
        gae(z, z, z, z, z, gamma=gamma, lam=lam)
