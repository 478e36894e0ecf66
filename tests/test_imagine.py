"""Imagined branches: per-branch GAE, cuts at the disagreement threshold, Dyna-CPPO on the toy task."""

import csv
import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import TOY_SEEDS, toy_outcome

import dynacppo_lite.imagine as imagine_module
from dynacppo_lite.batch import Batch
from dynacppo_lite.config import TOY_CONTROL, Config
from dynacppo_lite.envs import TOY_COST_LIMIT, TOY_ENV_ID
from dynacppo_lite.imagine import (
    advantage_agreement,
    imagine_branches,
    kept_steps,
    real_surrogate,
    round_kept,
)
from dynacppo_lite.nets import ActorCritic
from dynacppo_lite.runlog import CSV_COLUMNS
from dynacppo_lite.train import train

GAE = dict(gamma=0.9, lam=0.8, cost_gamma=0.9, cost_lam=0.8)


class ScriptedModel:
    """A model env whose state is (branch id, step); reward and cost depend on both.

    ``cut`` maps a branch to the step where it reports truncation (as ModelEnv does when the
    ensemble disagrees).
    """

    def __init__(self, cut: dict[int, int] | None = None) -> None:
        self.cut = cut or {}

    def reset(self, start_obs):
        self.obs = torch.as_tensor(start_obs, dtype=torch.float32).clone()
        self.t = 0
        return self.obs.clone(), {}

    def step(self, actions):
        b = self.obs[:, 0]
        reward = 1.0 + 10.0 * b + self.t
        cost = 0.5 * b
        self.t += 1
        self.obs = self.obs + torch.tensor([0.0, 1.0])
        trunc = torch.tensor([self.cut.get(int(i), -1) == self.t - 1 for i in b])
        return self.obs.clone(), reward, cost, torch.zeros_like(trunc), trunc, {}


def reference_branch_gae(rewards, values, next_values, gamma, lam):
    """GAE down one branch that bootstraps at its last step (plain loop)."""
    adv, last = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] - values[t]
        last = delta + (gamma * lam * last if t < len(rewards) - 1 else 0.0)
        adv[t] = last
    return adv


def run(model, starts, k=4):
    torch.manual_seed(0)
    agent = ActorCritic(2, 1)
    br = imagine_branches(model, agent, torch.as_tensor(starts, dtype=torch.float32), k,
                          lambda x: x, low=np.array([-1.0]), high=np.array([1.0]), **GAE)
    return agent, br


def test_gae_never_crosses_a_branch_boundary():
    starts = np.array([[0.0, 0.0], [1.0, 0.0]])
    agent, br = run(ScriptedModel(), starts)
    k = br.obs.shape[0]
    for b in range(2):
        obs = br.obs[:, b]
        v = agent.v_r(obs).detach().numpy()
        next_obs = obs + torch.tensor([0.0, 1.0])
        nv = agent.v_r(next_obs).detach().numpy()
        ref = reference_branch_gae(br.rew[:, b].numpy(), v, nv, GAE["gamma"], GAE["lam"])
        np.testing.assert_allclose(br.adv_r[:, b].numpy(), ref, rtol=1e-5, atol=1e-5)
    # Gluing branch 0 onto branch 1 (the seed code's bug) would change branch 0's last step.
    glued_last = (br.rew[-1, 0] + GAE["gamma"] * agent.v_r(br.obs[0, 1:2]).detach()[0]
                  - agent.v_r(br.obs[-1, 0:1]).detach()[0]).item()
    assert abs(glued_last - br.adv_r[-1, 0].item()) > 1e-3
    assert br.valid.all() and br.length.tolist() == [k, k]


def test_branches_are_cut_where_the_model_truncates():
    starts = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    agent, br = run(ScriptedModel(cut={1: 1}), starts, k=5)
    assert br.length.tolist() == [5, 2, 5]
    assert br.valid[:, 1].tolist() == [True, True, False, False, False]
    # The cut step bootstraps from V(next state) and starts its own recursion.
    obs = br.obs[1, 1:2]
    expected = (br.rew[1, 1] + GAE["gamma"] * agent.v_r(obs + torch.tensor([0.0, 1.0]))
                - agent.v_r(obs)).item()
    assert abs(br.adv_r[1, 1].item() - expected) < 1e-5


def test_kept_steps_run_up_to_and_including_the_first_end():
    ended = torch.tensor([[False, True, False], [True, True, False], [False, False, False]])
    assert kept_steps(ended).T.tolist() == [[True, True, False], [True, False, False],
                                            [True, True, True]]


def test_dyna_cppo_learns_toy_task_and_ends_near_its_limit(tmp_path):
    """cppo's toy protocol (conftest.TOY_SEEDS, the last 40% judged): measured late cost per seed
    0.98-1.13x the limit, averaged over the seeds 1.05-1.08x; late gain per seed 8.5-13.2."""
    def config(seed: int) -> Config:
        return Config(algo="dyna-cppo", env_id=TOY_ENV_ID, total_steps=30_000, num_envs=1,
                      steps_per_iter=1_000, log_dir=str(tmp_path), pi_lr=3e-3, model_start_iter=3,
                      model_hidden=(64, 64), seed=seed, run_name=f"dyna{seed}", **TOY_CONTROL)

    tables = [read_csv(train(config(seed))) for seed in TOY_SEEDS]
    gain, cost = toy_outcome(tables)
    assert gain > 4.0
    assert cost <= TOY_COST_LIMIT * 1.1
    table = tables[-1]
    used = [r for r in table if r["imagined_frac"] != ""]
    assert used and all(float(r["imagined_frac"]) > 0 for r in used)
    assert all(float(r["imagined_cost_rate"]) >= 0 for r in used)
    # Same seed, same numbers.
    again = read_csv(train(dataclasses.replace(config(TOY_SEEDS[-1]), run_name="again")))
    assert [r["ep_return"] for r in again] == [r["ep_return"] for r in table]
    assert [r["loss_dyn_holdout"] for r in again] == [r["loss_dyn_holdout"] for r in table]


def read_csv(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


DYNA_COLUMNS = {"loss_dyn_train", "loss_dyn_holdout", "dyn_fit_epochs", "dyn_err_obs_1", "dyn_err_obs_k",
                "dyn_err_rew_1", "dyn_err_rew_k", "dyn_err_cost_1", "dyn_err_cost_k",
                *(f"dyn_err_{group}_{h}" for group in ("sensors", "pose", "objects") for h in "1k"),
                "imagined_frac", "imagined_cost_rate", "real_cost_rate", "imag_adv_r_scale",
                "imag_adv_r_corr", "imag_adv_c_scale", "imag_adv_c_corr", "branch_len_mean"}


def test_imagined_frac_zero_is_cppo_bit_for_bit_with_the_model_measured(tmp_path):
    """The control run: the model is fitted and measured, and nothing else changes."""
    common = dict(env_id=TOY_ENV_ID, total_steps=6_000, num_envs=1, steps_per_iter=1_000,
                  log_dir=str(tmp_path), model_start_iter=2, model_hidden=(32, 32), seed=3,
                  **TOY_CONTROL)
    cppo = read_csv(train(Config(algo="cppo", **common)))
    dyna = read_csv(train(Config(algo="dyna-cppo", imagined_frac=0.0, **common)))
    assert ({c for c in CSV_COLUMNS if all(r[c] == "" for r in cppo)}
            == DYNA_COLUMNS | {"lagrange", "rounds_kept", "rounds_kl"})
    shared = [c for c in CSV_COLUMNS if c not in DYNA_COLUMNS and not c.startswith("t_")
              and c not in ("sps", "time_s")]
    assert {"ep_return", "ep_cost", "kl", "loss_pi", "loss_vr", "estep_angle"} <= set(shared)
    for c in shared:
        assert [r[c] for r in dyna] == [r[c] for r in cppo], c
    # Fitted from the first iteration, measured on fresh data from the second, probed (and
    # imagining nothing) from model_start_iter.
    assert all(r["loss_dyn_holdout"] != "" and r["real_cost_rate"] != "" for r in dyna)
    assert dyna[0]["dyn_err_obs_1"] == "" and all(float(r["dyn_err_obs_1"]) > 0 for r in dyna[1:])
    probed = [r for r in dyna if int(r["iteration"]) >= 2]
    assert all(float(r["imagined_frac"]) == 0 and r["imagined_cost_rate"] == "" for r in probed)
    assert all(-1 <= float(r["imag_adv_r_corr"]) <= 1 and float(r["imag_adv_r_scale"]) > 0
               for r in probed)
    assert all(r["imag_adv_r_corr"] == "" for r in dyna[:2])


def test_model_rounds_update_the_policy_again_on_imagined_batches_only(tmp_path, monkeypatch):
    """ME-TRPO's rounds start with the imagined samples: before model_start_iter the run is the
    one without rounds, number for number; a round the real batch accepts moves the policy and
    is counted, one it rejects is undone."""
    common = dict(algo="dyna-cppo", env_id=TOY_ENV_ID, total_steps=5_000, num_envs=1,
                  steps_per_iter=1_000, log_dir=str(tmp_path), model_start_iter=2,
                  model_hidden=(32, 32), seed=3, **TOY_CONTROL)
    one = read_csv(train(Config(run_name="one", **common)))
    two = read_csv(train(Config(run_name="two", model_rounds=2, **common)))
    assert [r["ep_return"] for r in two[:3]] == [r["ep_return"] for r in one[:3]]
    assert [r["kl"] for r in two[:2]] == [r["kl"] for r in one[:2]]
    assert all(r["rounds_kept"] == "" for r in one + two[:2])
    assert all(0 <= int(r["rounds_kept"]) <= 2 for r in two[2:])

    moved = []
    real_load = torch.nn.Module.load_state_dict

    def spy(self, state, *args, **kwargs):
        moved.append(type(self).__name__)
        return real_load(self, state, *args, **kwargs)

    for verdict in (True, False):
        moved.clear()
        monkeypatch.setattr(imagine_module, "round_kept", lambda *a, v=verdict: v)
        monkeypatch.setattr(torch.nn.Module, "load_state_dict", spy)
        rows = read_csv(train(Config(run_name=f"kept_{verdict}", model_rounds=2, **common)))
        monkeypatch.setattr(torch.nn.Module, "load_state_dict", real_load)
        assert all(int(r["rounds_kept"]) == 2 * verdict for r in rows[2:])
        assert all((float(r["rounds_kl"]) > 0) == verdict for r in rows[2:])
        # Each rejected round restores the policy: 3 iterations with 2 rounds each.
        assert moved.count("GaussianPolicy") == (0 if verdict else 6), moved
    with pytest.raises(ValueError, match="model_rounds must be >= 0"):
        Config(model_rounds=-1).validate()
    with pytest.raises(ValueError, match="model_fit_patience must be >= 1"):
        Config(model_fit_patience=0).validate()


def test_a_round_is_kept_where_the_real_batch_agrees():
    assert round_kept((0.1, 0.0), (0.2, 0.01), "normal", cost_margin=0.02)
    assert not round_kept((0.1, 0.0), (0.2, 0.03), "normal", cost_margin=0.02)
    assert not round_kept((0.1, 0.0), (0.2, 0.001), "normal", cost_margin=-0.5)
    assert not round_kept((0.1, 0.0), (0.05, -0.1), "normal", cost_margin=0.02)
    assert round_kept((0.1, 0.0), (-1.0, -0.1), "recovery", cost_margin=-0.5)
    assert not round_kept((0.1, 0.0), (1.0, 0.1), "recovery", cost_margin=-0.5)


def test_real_surrogate_is_the_first_order_change_over_the_behaviour_policy():
    torch.manual_seed(0)
    agent = ActorCritic(3, 2)
    obs, act = torch.randn(50, 3), torch.randn(50, 2)
    with torch.no_grad():
        logp_now = agent.pi.log_prob(agent.pi(obs), act)
    logp_old = logp_now + 0.1 * torch.randn(50)
    adv_r, adv_c = torch.randn(50), torch.randn(50)
    batch = Batch(obs=obs, act=act, logp=logp_old, adv_r=adv_r, adv_c=adv_c, ret_r=adv_r,
                  ret_c=adv_c, critic_mask=torch.ones(50, dtype=torch.bool))
    ratio = torch.exp(logp_now - logp_old)
    expected = (float(((ratio - 1) * adv_r).mean()), float(((ratio - 1) * adv_c).mean()))
    assert real_surrogate(agent, batch) == pytest.approx(expected, rel=1e-5)
    batch.logp = logp_now
    assert real_surrogate(agent, batch) == pytest.approx((0.0, 0.0), abs=1e-6)


def test_advantage_agreement_is_the_std_ratio_and_the_correlation():
    real = torch.tensor([1.0, -2.0, 3.0, 0.5, -1.0])
    assert advantage_agreement(3 * real + 1, real) == pytest.approx((3.0, 1.0))
    assert advantage_agreement(-0.5 * real, real) == pytest.approx((0.5, -1.0))
    noisy = real + torch.tensor([0.5, 0.5, -0.5, -0.5, 0.0])
    scale, corr = advantage_agreement(noisy, real)
    assert 0.5 < corr < 1.0 and scale == pytest.approx(float(noisy.std() / real.std()))
    assert all(math.isnan(x) for x in advantage_agreement(torch.ones(5), real))


def test_first_act_and_generator_drive_the_actions_not_the_global_rng():
    agent = ActorCritic(2, 1)
    starts = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    first = torch.tensor([[0.7], [-0.3]])

    def branches(seed):
        return imagine_branches(ScriptedModel(), agent, starts, 3, lambda x: x, low=np.array([-1.0]),
                                high=np.array([1.0]), first_act=first,
                                generator=torch.Generator().manual_seed(seed), **GAE)

    global_state = torch.get_rng_state()
    br, again, other = branches(0), branches(0), branches(1)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(br.act[0], first) and torch.equal(br.act, again.act)
    assert not torch.equal(br.act[1:], other.act[1:])
    expected = agent.pi.log_prob(agent.pi(br.obs[0]), first)
    torch.testing.assert_close(br.logp[0], expected)


@pytest.mark.parametrize("imagined_policy", [True, False])
def test_imagined_samples_reach_the_estep_only_with_imagined_policy(tmp_path, imagined_policy):
    """imagined_policy=False: the E-step sees the real batch alone, the critics the imagined too."""
    from dynacppo_lite.estep import solve_estep

    sizes = []

    def counting_estep(adv_r, adv_c, **kw):
        sizes.append(len(adv_r))
        return solve_estep(adv_r, adv_c, **kw)

    cfg = Config(algo="dyna-cppo", env_id=TOY_ENV_ID, total_steps=3_000, num_envs=1,
                 steps_per_iter=1_000, log_dir=str(tmp_path), model_start_iter=1,
                 model_hidden=(32, 32), imagined_policy=imagined_policy, **TOY_CONTROL)
    rows = read_csv(train(cfg, estep=counting_estep))
    assert sizes[0] == 1_000
    assert all(float(r["imagined_frac"]) > 0 for r in rows[1:])  # imagined every time...
    assert all((n > 1_000) == imagined_policy for n in sizes[1:])  # ... the E-step saw them or not
    with pytest.raises(ValueError, match="unused"):
        Config(imagined_policy=False, imagined_critics=False).validate()


@pytest.mark.parametrize("imagined_adv", ["both", "cost"])
def test_imagined_adv_cost_gives_the_estep_imagined_cost_advantages_only(tmp_path, imagined_adv):
    """imagined_adv="cost": the E-step's imagined samples carry A_c and a zero A_r; "both" keeps
    their A_r. The real samples (the first 1,000) are the same either way."""
    from dynacppo_lite.estep import solve_estep

    seen = []

    def recording_estep(adv_r, adv_c, **kw):
        seen.append((np.array(adv_r), np.array(adv_c)))
        return solve_estep(adv_r, adv_c, **kw)

    cfg = Config(algo="dyna-cppo", env_id=TOY_ENV_ID, total_steps=2_000, num_envs=1,
                 steps_per_iter=1_000, log_dir=str(tmp_path), model_start_iter=1,
                 model_hidden=(32, 32), imagined_adv=imagined_adv, **TOY_CONTROL)
    train(cfg, estep=recording_estep)
    adv_r, adv_c = seen[-1]
    assert len(adv_r) > 1_000
    assert np.any(adv_r[:1_000] != 0) and np.any(adv_c[1_000:] != 0)
    assert np.all(adv_r[1_000:] == 0) == (imagined_adv == "cost")
    with pytest.raises(ValueError, match="imagined_adv must be one of"):
        Config(imagined_adv="reward").validate()


def test_a_simulator_branch_step_is_the_envs_own_step():
    """dyna_model="simulator": one imagined step from real states (one of them over the speed
    limit) gives the env's own reward, cost and next observation, and the policy sees the next
    observation through the envs' normaliser, as it sees ModelEnv's."""
    from dynacppo_lite.envs import make_env
    from dynacppo_lite.envs.make import single_env_factory
    from dynacppo_lite.imagine import DynaModel, observation_normalizer

    env_id = "SafetyHalfCheetahVelocity-v1"
    env = single_env_factory(env_id)()
    env.reset(seed=1)
    sim, rng = env.unwrapped, np.random.default_rng(0)
    starts, acts, nexts, rews, costs = [], [], [], [], []
    for i in range(6):
        if i == 5:  # running forward at twice the speed limit
            sim.set_state(sim.data.qpos, np.r_[6.5, sim.data.qvel[1:]])
        # The branch starts where the rollout's float32 copy says the env is; so does the env.
        obs = np.concatenate([sim.data.qpos[1:], sim.data.qvel]).astype(np.float32)
        sim.set_state(np.r_[sim.data.qpos[0], obs[:8]], obs[8:])
        act = rng.uniform(-1, 1, 6)
        nxt, r, c, *_ = env.step(act)
        for store, x in zip((starts, acts, nexts, rews, costs), (obs, act, nxt, r, c), strict=True):
            store.append(x)
    assert set(costs) == {0.0, 1.0}  # the check covers both costs

    cfg = Config(algo="dyna-cppo", env_id=env_id, dyna_model="simulator", model_horizon=2)
    envs = make_env(env_id, 1, seed=0)
    envs.reset(seed=0)
    for _ in range(20):  # a normaliser that is not the identity
        envs.step(rng.uniform(-1, 1, (1, 6)))
    dyna = DynaModel(cfg, 17, 6, torch.device("cpu"))
    br = dyna.branches(ActorCritic(17, 6), envs, torch.tensor(np.array(starts)),
                       first_act=torch.tensor(np.array(acts), dtype=torch.float32))
    normalize = observation_normalizer(envs)
    np.testing.assert_allclose(br.rew[0].numpy(), rews, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(br.cost[0].numpy(), costs)
    torch.testing.assert_close(br.obs[1], normalize(torch.tensor(np.array(nexts),
                                                                 dtype=torch.float32)),
                               rtol=1e-4, atol=1e-4)
    assert bool(br.valid.all())  # the simulator cuts no branch before its horizon
    envs.close()

    with pytest.raises(ValueError, match="observation is the MuJoCo state"):
        DynaModel(dataclasses.replace(cfg, env_id="SafetyPointGoal1-v0"), 60, 2,
                  torch.device("cpu"))
    with pytest.raises(ValueError, match="dyna_model must be one of"):
        dataclasses.replace(cfg, dyna_model="oracle").validate()


def test_dyna_cppo_with_the_simulator_leaves_the_ensembles_columns_empty(tmp_path):
    """The perfect-model run: imagined samples and probes from the simulator, no model fit."""
    cfg = Config(algo="dyna-cppo", env_id="SafetyHalfCheetahVelocity-v1", dyna_model="simulator",
                 total_steps=2_000, num_envs=1, steps_per_iter=1_000, model_start_iter=1,
                 log_dir=str(tmp_path))
    rows = read_csv(train(cfg))
    assert set(rows[0]) == set(CSV_COLUMNS)
    for col in ("loss_dyn_train", "loss_dyn_holdout", "dyn_fit_epochs", "dyn_err_obs_1"):
        assert all(r[col] == "" for r in rows)
    assert float(rows[1]["imagined_frac"]) == pytest.approx(1 / 3, abs=0.01)
    assert -1 <= float(rows[1]["imag_adv_r_corr"]) <= 1
