"""A training process for the fault-injection tests: `python -m tests.fault_worker WORKDIR [--plan ...]`.

Trains the tiny config for 24 steps (checkpoints every 4, logs every 2, rollback window 4 and 6 steps back),
with faults from `--plan` ("STEP:ROLLBACKS:FAULT,...", see tests/faults.py) and, with `--kill_during_save=STEP`,
a SIGKILL of itself right after the save of STEP has started (once per workdir).
"""

import os
import signal

from absl import app, flags, logging

from declip_jax import train
from declip_jax.training import checkpointing
from tests import faults
from tests.tiny_config import tiny_config

_PLAN = flags.DEFINE_string("plan", "", "Faults: STEP:ROLLBACKS:FAULT,...")
_KILL_DURING_SAVE = flags.DEFINE_integer("kill_during_save", 0, "Kill this process while saving this step.")
NUM_STEPS = 24


def worker_config():
  c = tiny_config()
  c.train.num_steps = NUM_STEPS
  c.train.log_every_steps = 2
  c.checkpoint.every_steps = 4
  c.eval.every_steps = 1000
  c.optim.schedule_steps = 2 * NUM_STEPS  # A learning rate above 0 throughout.
  c.train.recovery.spike_window = 4
  c.train.recovery.min_steps_back = 6
  return c


def _kill_during_save(workdir: str, kill_step: int) -> None:
  marker = os.path.join(workdir, f"killed_during_save_{kill_step}")
  original = checkpointing.Checkpointer.save

  def save(self, step, state, meta):
    started = original(self, step, state, meta)
    if step == kill_step and not os.path.exists(marker):
      open(marker, "w").close()
      os.kill(os.getpid(), signal.SIGKILL)
    return started

  checkpointing.Checkpointer.save = save


def main(argv):
  workdir = argv[1]
  plan = {}
  for item in filter(None, _PLAN.value.split(",")):
    step, rollbacks, fault = item.split(":")
    plan[(int(step), int(rollbacks))] = fault
  faults.install(plan)
  if _KILL_DURING_SAVE.value:
    _kill_during_save(workdir, _KILL_DURING_SAVE.value)
  logging.set_verbosity(logging.INFO)
  out = train.run(worker_config(), workdir)
  print("done", out["step"], len(out["rollbacks"]), flush=True)


if __name__ == "__main__":
  app.run(main)
