"""The tiny config of the stop tests (tests/test_stop.py), also a config file for `declip_jax.main`: logs every
step, evaluates zero-shot shape alone every 6 steps and checkpoints only at the end, so that a stop's checkpoint
is the only one before the last step."""

from tests.tiny_config import tiny_config


def get_config():
  c = tiny_config()
  c.train.num_steps = 16
  c.train.log_every_steps = 1
  c.checkpoint.every_steps = 100_000
  c.eval.every_steps = 6
  c.evals.zero_shot_colour.enabled = False
  c.evals.retrieval.enabled = False
  c.optim.schedule_steps = 256  # A learning rate above 0 throughout, for every run length the tests use.
  return c
