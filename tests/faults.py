"""Fault injection for the tests: the jitted train step, wrapped to corrupt the batch or the state at chosen steps.

A plan maps (step, rollbacks so far) to a fault, so a fault recurs exactly when a resumed run reaches the same
step on the same trajectory: runs that inject it are reproducible across kills and resumes.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from declip_jax.training import train_setup

SPIKE = 1000.0  # Added to the MLM logit of the padding id: the TSS loss jumps by about this x its weight.


def _nan_batch(state, batch):
  return state, {**batch, "img1": batch["img1"] * jnp.nan}


def _nan_params(state, batch):
  return state.replace(params={**state.params, "logit_scale": state.params["logit_scale"] * jnp.nan}), batch


def _spike(state, batch):
  bias = state.params["mlm_head"]["dense"]["bias"]
  head = {"dense": {**state.params["mlm_head"]["dense"], "bias": bias.at[0].add(SPIKE)}}
  return state.replace(params={**state.params, "mlm_head": head}), batch


FAULTS: dict[str, Callable] = {"nan_batch": _nan_batch, "nan_params": _nan_params, "spike": _spike}


def install(plan: dict[tuple[int, int], str]) -> Callable[[], None]:
  """Makes every train step built from now on apply `plan[(step about to run, rollbacks so far)]`.

  Returns a function that removes the injection.
  """
  original = train_setup.Setup.jit_train_step

  def jit_train_step(self, config):
    step_fn = original(self, config)

    def faulty_step(state, batch):
      key = (int(jax.device_get(state.step)) + 1, int(jax.device_get(state.health.rollbacks)))
      if key in plan:
        state, batch = FAULTS[plan[key]](state, batch)
      return step_fn(state, batch)

    return faulty_step

  train_setup.Setup.jit_train_step = jit_train_step
  return lambda: setattr(train_setup.Setup, "jit_train_step", original)
