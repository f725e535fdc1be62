"""Orbax checkpoints of the train state, plus a small JSON record (data position, config) per step."""

from typing import Any, Optional

import orbax.checkpoint as ocp
from etils import epath


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

  def wait(self) -> None:
    """Blocks until pending saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

