"""Shared check for the streamed-data tests: an iterator position saved mid-run restores batch for batch."""

import numpy as np

from declip_jax.data import pipeline
from declip_jax.data.record_stream import BAD_RECORD_COUNTERS


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


def expected_bad_record_counts(records, categories: dict, count: int) -> tuple[list[str], list[list[int]]]:
  """The reference for a stream's bad-record counting, from its raw records in the stream's order.

  Args:
    records: (key, extra) per raw record, where extra names counters to add that are not a record's own
      category (e.g. {"truncated_shard": 1}) and key None marks a record that is not an example.
    categories: key -> the counter a bad record adds to (counters starting with "skipped" drop the record).
    count: how many usable examples to follow.
  Returns:
    The keys of the first `count` usable examples and the cumulative counts (in BAD_RECORD_COUNTERS order) up
    to each.
  """
  keys, counts, totals = [], [], dict.fromkeys(BAD_RECORD_COUNTERS, 0)
  for key, extra in records:
    for name, value in extra.items():
      totals[name] += value
    if key is None:
      continue
    if key in categories:
      totals[categories[key]] += 1
    if categories.get(key, "").startswith("skipped"):
      continue
    keys.append(key)
    counts.append(list(totals.values()))
    if len(keys) == count:
      break
  return keys, counts
