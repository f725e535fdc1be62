"""Shared check for the streamed-data tests: an iterator position saved mid-run restores batch for batch."""

import numpy as np

from declip_jax.data import pipeline


def assert_resumes_batch_for_batch(config, tokenizer, consumed: int, compared: int) -> list[dict]:
  """Saves the position after `consumed` batches; a fresh pipeline restored there yields the same next
  `compared` batches. Returns all consumed + compared batches of the first pipeline."""
  first = pipeline.TrainBatches(pipeline.train_dataset(config, tokenizer))
  seen = [next(first) for _ in range(consumed)]
  state = first.save()
  assert len(state) < 100_000
  expected = [next(first) for _ in range(compared)]
  resumed = pipeline.TrainBatches(pipeline.train_dataset(config, tokenizer))
  resumed.restore(state)
  for want in expected:
    got = next(resumed)
    assert set(got) == set(want)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  return seen + expected
