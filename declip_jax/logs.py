"""Reading a run's TensorBoard scalars back (for notebooks, plots and tests)."""

from typing import Optional, Sequence

from etils import epath


def read_scalars(workdir: str, prefixes: Optional[Sequence[str]] = None) -> dict[str, list[tuple[int, float]]]:
  """Every scalar the run in `workdir` logged: {tag: [(step, value), ...] sorted by step}.

  Where a step was logged twice (a resumed or rolled-back run repeats steps), the value written last wins. A
  record cut short by a killed process ends its file's reading.

  Args:
    prefixes: keep only tags starting with one of these (e.g. ("train/", "eval/")); None: all.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only the readers of logs pay for it)
  latest: dict[tuple[str, int], tuple[float, float]] = {}
  for path in sorted(epath.Path(workdir).glob("events.out.tfevents.*")):
    try:
      for event in tf.compat.v1.train.summary_iterator(str(path)):
        for value in event.summary.value:
          if prefixes is None or value.tag.startswith(tuple(prefixes)):
            key = (value.tag, event.step)
            if key not in latest or event.wall_time >= latest[key][0]:
              latest[key] = (event.wall_time, float(tf.make_ndarray(value.tensor)))
    except tf.errors.DataLossError:
      pass
  out: dict[str, list[tuple[int, float]]] = {}
  for (tag, step), (_, value) in sorted(latest.items()):
    out.setdefault(tag, []).append((step, value))
  return out
