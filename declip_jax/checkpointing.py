"""Orbax checkpoints of the train state, plus a small JSON record (data position, config) per step."""

from typing import Any, Optional

import orbax.checkpoint as ocp
from absl import logging
from etils import epath


class UnreadableCheckpointsError(RuntimeError):
  """Checkpoints exist but none of them can be read."""


class Checkpointer:
  """Saves and restores TrainState pytrees under `<workdir>/checkpoints/<step>/`.

  Saves are asynchronous (training continues while files are written) and atomic (a step directory appears
  only when complete); the newest `keep` are kept.
  """

  def __init__(self, workdir: str, keep: int, async_save: bool = True):
    self.directory = epath.Path(workdir) / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> bool:
    """Starts saving `state` at `step` (no-op if that step exists); returns whether a save started."""
    if step in self._manager.all_steps():
      return False
    return self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores the state at `step` with the shapes, dtypes and shardings of `abstract_state`."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta

  def restore_newest_readable(self, abstract_state: Any) -> Optional[tuple[int, Any, dict]]:
    """Restores the newest checkpoint that reads back whole; None when there is no checkpoint at all.

    A checkpoint with missing or truncated files is reported, renamed to `<step>.unreadable` (kept for
    inspection; the step can then be saved again) and skipped for the one before it.

    Raises:
      UnreadableCheckpointsError: checkpoints exist but none can be read (never silently start from scratch).
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    for step in steps:
      try:
        state, meta = self.restore(step, abstract_state)
        return step, state, meta
      except Exception as e:  # Orbax/TensorStore raise many types for torn files.  # pylint: disable=broad-except
        first_line = (str(e).splitlines() or [""])[0][:300]
        logging.warning("The checkpoint at step %d in %s cannot be read (%s: %s); keeping it as %d.unreadable "
                        "and trying the one before it.", step, self.directory, type(e).__name__, first_line, step)
        (self.directory / str(step)).rename(self.directory / f"{step}.unreadable")
        self._manager.reload()
    if steps:
      raise UnreadableCheckpointsError(f"None of the checkpoints {steps} in {self.directory} can be read; move "
                                       "them away to start from scratch.")
    return None

  def wait(self) -> None:
    """Blocks until pending saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

