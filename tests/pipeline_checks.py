"""Shared check for the streamed-data tests: an iterator position saved mid-run restores batch for batch."""

import numpy as np

from declip_jax.data import pipeline


def assert_resumes_batch_for_batch(config, tokenizer, consumed: int, compared: int, process_index: int = 0,
                                   process_count: int = 1) -> list[dict]:
  """Saves the position after `consumed` batches; a fresh pipeline restored there yields the same next
  `compared` batches. Returns all consumed + compared batches of the first pipeline."""
  build = lambda: pipeline.train_dataset(config, tokenizer, 0, process_index, process_count)
  first = pipeline.TrainBatches(build())
  seen = [next(first) for _ in range(consumed)]
  state = first.save()
  assert len(state) < 100_000
  expected = [next(first) for _ in range(compared)]
  resumed = pipeline.TrainBatches(build())
  resumed.restore(state)
  for want in expected:
    got = next(resumed)
    assert set(got) == set(want)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  return seen + expected
