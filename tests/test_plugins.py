"""Plug-in points of the trainer: a student's E-step, M-step loss and dual GAE replace the
library's, with a one-line error when they return the wrong thing."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import dynacppo_lite
from dynacppo_lite import Config, PluginError, Trainer
from dynacppo_lite.envs import TOY_ENV_ID
from dynacppo_lite.estep import EStepResult, solve_estep


def toy(tmp_path, **kw) -> Config:
    base = dict(env_id=TOY_ENV_ID, total_steps=3_000, num_envs=1, steps_per_iter=1_000,
                log_dir=str(tmp_path), checkpoint_every=100, seed=1)
    return Config(**(base | kw))


def rows(run_dir):
    with open(run_dir / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_train_is_a_plain_function_beside_its_module() -> None:
    import importlib
    import inspect
    import types

    from dynacppo_lite.train import train

    module = importlib.import_module("dynacppo_lite.train")
    assert inspect.isfunction(dynacppo_lite.train) and dynacppo_lite.train is train is module.train
    assert type(module) is types.ModuleType  # no class swap: an ordinary module
    assert dynacppo_lite.Trainer is module.Trainer and hasattr(module, "solve_estep")


def test_a_student_estep_is_called_and_trains(tmp_path) -> None:
    calls = []

    def my_estep(adv_r, adv_c, *, cost_margin, kl_budget, lower_bound, method, recovery):
        """Trust region only: the reward direction at full radius (ignores the cost)."""
        calls.append((adv_r.dtype, adv_r.shape, recovery))
        a = adv_r - adv_r.mean()
        x = a * np.sqrt(2 * kl_budget) / (np.sqrt(np.mean(a ** 2)) + 1e-12)
        return np.maximum(1 + x, lower_bound)

    run = dynacppo_lite.train(toy(tmp_path, run_name="student"), estep=my_estep)
    assert len(calls) == 3 and calls[0][:2] == (np.float64, (1_000,))
    assert len(rows(run)) == 3


def test_the_method_form_and_the_module_patch_both_work(tmp_path) -> None:
    seen = []

    class MyTrainer(Trainer):
        def estep(self, adv_r, adv_c, **kw):
            seen.append("method")
            return solve_estep(adv_r, adv_c, **kw)

        def policy_loss(self, logp_new, logp_old, v_target, *, lower_clip):
            seen.append("loss")
            return 0.5 * ((v_target - (logp_new - logp_old).exp()) ** 2).mean()

        def advantages(self, *args, **kw):
            seen.append("gae")
            out = dynacppo_lite.gae.dual_gae(*args, **kw)
            return out.adv_r.numpy(), out.adv_c.numpy(), out.ret_r.numpy(), out.ret_c.numpy()

    MyTrainer(toy(tmp_path, total_steps=1_000, run_name="sub")).run()
    assert {"method", "loss", "gae"} <= set(seen)


def test_plugins_give_the_same_run_as_the_library(tmp_path) -> None:
    """The library's own functions passed as plug-ins change nothing (for either M-step)."""
    from dynacppo_lite.gae import dual_gae
    from dynacppo_lite.mstep import linear_mstep_loss, mstep_loss

    for mstep, loss in (("linear", linear_mstep_loss), ("tracking", mstep_loss)):
        a = rows(dynacppo_lite.train(toy(tmp_path, run_name=f"a_{mstep}", mstep=mstep)))
        b = rows(dynacppo_lite.train(toy(tmp_path, run_name=f"b_{mstep}", mstep=mstep),
                                     estep=solve_estep, policy_loss=loss, advantages=dual_gae))
        keep = [k for k in a[0] if not (k.startswith("t_") or k in ("time_s", "sps"))]
        assert [[r[k] for k in keep] for r in a] == [[r[k] for k in keep] for r in b]


@pytest.mark.parametrize(("plugin", "fn", "message"), [
    ("estep", lambda a, c, **kw: float(a.mean()), "estep plug-in returned float: expected an "
     "estep.EStepResult or the target ratios v"),
    ("estep", lambda a, c, **kw: np.ones(len(a) - 1), "estep plug-in: v has shape (999,), expected (1000,)"),
    ("estep", lambda a, c, **kw: np.zeros(len(a)), "below lower_bound"),
    ("policy_loss", lambda ln, lo, v, **kw: (v - ln).pow(2), "expected a scalar torch tensor"),
    ("policy_loss", lambda ln, lo, v, **kw: (v - ln).pow(2).mean().detach().item(), "returned float"),
    ("policy_loss", lambda ln, lo, v, **kw: (v - ln.detach()).pow(2).mean(), "without gradient"),
    ("advantages", lambda *a, **kw: a[0], "returned Tensor: expected a gae.DualGAE"),
    ("advantages", lambda r, *a, **kw: (r[:-1],) * 4, "adv_r has shape"),
])
def test_a_wrong_plugin_is_a_one_line_error(tmp_path, plugin, fn, message) -> None:
    with pytest.raises(PluginError) as info:
        dynacppo_lite.train(toy(tmp_path, total_steps=1_000, run_name=plugin), **{plugin: fn})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_estep_result_passes_through_and_ppo_lag_refuses_estep(tmp_path) -> None:
    def full(adv_r, adv_c, **kw) -> EStepResult:
        return solve_estep(adv_r, adv_c, **kw)

    dynacppo_lite.train(toy(tmp_path, total_steps=1_000, run_name="full"), estep=full)
    with pytest.raises(ValueError, match="ppo-lag"):
        Trainer(toy(tmp_path, algo="ppo-lag"), estep=full)
    with pytest.raises(TypeError, match="unknown plug-in"):
        dynacppo_lite.train(toy(tmp_path), e_step=full)


def test_estep_result_wraps_a_bare_v() -> None:
    from dynacppo_lite.estep import estep_result

    a, c = np.array([1.0, -1.0, 0.5, -0.5]), np.array([1.0, 1.0, -1.0, -1.0])
    res = estep_result(np.array([1.1, 0.9, 1.0, 1.0]), a, c, cost_margin=0.0)
    assert res.feasible and res.mode == "normal" and res.objective == pytest.approx(np.mean(a) + 0.05)
    assert not estep_result(np.array([1.2, 1.2, 0.8, 0.8]), a, c, cost_margin=0.0).feasible
    assert torch.is_tensor(torch.as_tensor(res.v))


def test_patching_the_module_reaches_the_trainer(tmp_path, monkeypatch) -> None:
    """A patch of the module's ``solve_estep`` takes effect (the plug-ins are the intended way)."""
    import importlib

    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return solve_estep(*args, **kwargs)

    monkeypatch.setattr(importlib.import_module("dynacppo_lite.train"), "solve_estep", counting)
    dynacppo_lite.train(toy(tmp_path, total_steps=2_000, run_name="patched"))
    assert len(calls) == 2


def test_multiple_targets_switch_as_the_ratio_moves(tmp_path) -> None:
    """Section 3.4: with K targets the M-step starts on the smallest and moves on once its
    ratio has used that budget; K = 1 always fits the one target."""
    multi = rows(dynacppo_lite.train(toy(tmp_path, run_name="k3", estep_targets=3)))
    used = {int(r["target_used"]) for r in multi}
    assert used <= {1, 2, 3} and max(used) >= 2
    single = rows(dynacppo_lite.train(toy(tmp_path, run_name="k1")))
    assert {int(r["target_used"]) for r in single} == {1}
