"""Imagined branches: per-branch GAE, cuts at the disagreement threshold, Dyna-CPPO on the toy task."""

import csv

import numpy as np
import torch

from dynacppo_lite.config import TOY_CONTROL, Config
from dynacppo_lite.envs import TOY_COST_LIMIT, TOY_ENV_ID
from dynacppo_lite.imagine import imagine_branches
from dynacppo_lite.nets import ActorCritic
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


def test_dyna_cppo_learns_toy_task_under_the_limit(tmp_path):
    cfg = Config(algo="dyna-cppo", env_id=TOY_ENV_ID, total_steps=20_000, num_envs=1,
                 steps_per_iter=1_000, log_dir=str(tmp_path), pi_lr=3e-3, model_start_iter=3,
                 model_hidden=(64, 64), seed=2, **TOY_CONTROL)
    run_dir = train(cfg)
    with open(run_dir / "progress.csv", newline="") as f:
        table = list(csv.DictReader(f))
    late = table[-4:]
    assert np.mean([float(r["ep_return"]) for r in late]) > float(table[0]["ep_return"]) + 4.0
    assert np.mean([float(r["ep_cost"]) for r in late]) <= TOY_COST_LIMIT * 1.1
    used = [r for r in table if r["imagined_frac"] != ""]
    assert used and all(float(r["imagined_frac"]) > 0 for r in used)
    assert all(float(r["imagined_cost_rate"]) >= 0 for r in used)
    # Same seed, same numbers.
    cfg.run_name = "again"
    with open(train(cfg) / "progress.csv", newline="") as f:
        again = list(csv.DictReader(f))
    assert [r["ep_return"] for r in again] == [r["ep_return"] for r in table]
    assert [r["loss_dyn_holdout"] for r in again] == [r["loss_dyn_holdout"] for r in table]
