"""Orbax checkpoints of the train state, plus a small JSON record (data position, config, fingerprint) per step."""

import contextlib
import os
import re
import shutil
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}
# Odd multipliers per array dimension: an element's weight depends on its position, so moved values show up too.
_POSITION_MULTIPLIERS = (2654435761, 2246822519, 3266489917, 668265263, 374761393, 2870177450 | 1)


def _leaf_checksum(x: jax.Array) -> jax.Array:
  """Position-weighted sum of the bit patterns of `x`, modulo 2**32 (uint32 scalar); order-independent."""
  if x.dtype == jnp.bool_:
    bits = x.astype(jnp.uint32)
  else:
    bits = jax.lax.bitcast_convert_type(x, _UNSIGNED[x.dtype.itemsize]).astype(jnp.uint32)
  weight = jnp.ones(x.shape, jnp.uint32)
  for dim in range(x.ndim):
    index = jax.lax.broadcasted_iota(jnp.uint32, x.shape, dim)
    weight = weight + index * jnp.uint32(_POSITION_MULTIPLIERS[dim % len(_POSITION_MULTIPLIERS)])
  return jnp.sum(bits * (2 * weight + 1), dtype=jnp.uint32)


@jax.jit
def fingerprint(tree: Any) -> jax.Array:
  """[number of leaves] uint32 checksums of a pytree's arrays: any changed bit changes one (with high
  probability); the same on any number of devices and hosts (integer sums do not depend on order)."""
  return jnp.stack([_leaf_checksum(x) for x in jax.tree.leaves(tree)])


def _leaf_names(tree: Any) -> list[str]:
  return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


class CorruptCheckpointError(RuntimeError):
  """A checkpoint read back with values that differ from the ones written."""


def verify_fingerprint(restored: Any, abstract_state: Any, meta: dict, field: Optional[str] = None) -> None:
  """Checks restored arrays against the fingerprint saved in `meta` (no-op for checkpoints without one).

  Args:
    restored: the whole restored state, or (with `field`) one of its fields alone, e.g. the params.
    abstract_state: the whole state's structure, which fixes where each leaf's checksum sits in the saved list.
    field: the attribute name of `restored` in the state; None when `restored` is the whole state.
  Raises:
    CorruptCheckpointError: a leaf's checksum differs, or the saved list does not fit the state.
  """
  expected = meta.get("fingerprint")
  if expected is None:
    return
  names = _leaf_names(abstract_state)
  if len(names) != len(expected):
    raise CorruptCheckpointError(f"the checkpoint's fingerprint has {len(expected)} entries, the state {len(names)}")
  saved = dict(zip(names, expected))
  restored_names = _leaf_names(restored) if field is None else [f".{field}{n}" for n in _leaf_names(restored)]
  actual = np.asarray(jax.device_get(fingerprint(restored)))
  changed = [name for name, a in zip(restored_names, actual) if saved.get(name) != int(a)]
  if changed:
    raise CorruptCheckpointError(f"restored values differ from the ones saved in {', '.join(changed[:5])}"
                                 + (" ..." if len(changed) > 5 else ""))


class UnreadableCheckpointsError(RuntimeError):
  """Checkpoints exist but none of them can be read."""


class CheckpointWriteError(RuntimeError):
  """A checkpoint cannot be written (no space, no permission, an I/O error); the message is one line: where,
  why, the free space, the last good checkpoint, and that rerunning resumes."""


EXIT_CODE = 74  # sysexits' EX_IOERR.
# What an I/O failure says on its way up through Orbax and TensorStore (whose errors are ValueErrors).
_WRITE_FAILURE = re.compile(r"No space left|RESOURCE_EXHAUSTED|Permission denied|PERMISSION_DENIED|Read-only file "
                            r"system|Disk quota|File too large|os_error_code|Input/output error")


def _write_failure_reason(error: BaseException) -> Optional[str]:
  """What an exception says went wrong writing (e.g. "No space left on device"), or None when it is not a write
  failure. Looks through its causes: Orbax wraps TensorStore's errors, which wrap the OS's."""
  chain, cause = [], error
  while cause is not None and len(chain) < 8:
    chain.append(cause)
    cause = cause.__cause__ or cause.__context__
  if not any(isinstance(e, OSError) or _WRITE_FAILURE.search(str(e)) for e in chain):
    return None
  text = " ".join(str(e) for e in chain)
  known = re.search(r"No space left on device|Permission denied|Read-only file system|Disk quota exceeded|File too "
                    r"large|Input/output error", text)
  return known.group(0) if known else " ".join(str(error).split())[:200]


def free_bytes(directory: epath.Path) -> Optional[int]:
  """Free bytes on the local filesystem holding `directory`; None for object stores (no such number)."""
  if "://" in str(directory):
    return None
  return shutil.disk_usage(directory).free


def _bytes_under(path: epath.Path) -> int:
  """The total size of the files below a local directory (0 for object stores)."""
  if "://" in str(path) or not path.exists():
    return 0
  return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def _megabytes(n: int) -> str:
  return f"{n / 2**20:.1f} MB"


class Checkpointer:
  """Saves and restores TrainState pytrees under `<workdir>/checkpoints/<step>/`.

  Saves are asynchronous (training continues while files are written) and atomic (a step directory appears
  only when complete); the newest `keep` are kept. Each save records the state's `fingerprint`, which a restore
  checks, so that files that read back with changed bytes are caught, not trained on.
  """

  def __init__(self, workdir: str, keep: int, async_save: bool = True):
    local = "://" not in str(workdir)  # Orbax refuses a relative local path (it fails at the first save).
    self.directory = epath.Path(os.path.abspath(workdir) if local else workdir) / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def newest_on_disk(self) -> Optional[int]:
    """The newest committed checkpoint's step as the directory shows it now (after `wait`); None when none."""
    self._manager.reload()
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def prepare(self, state: Any) -> None:
    """Compiles the fingerprint every save computes, for the shapes and shardings of `state`, so that the first
    save (perhaps a stop's, with a deadline) does not wait for the compiler (2.2 s of a tiny run's first save)."""
    jax.block_until_ready(fingerprint(state))

  def save(self, step: int, state: Any, meta: dict) -> bool:
    """Starts saving `state` at `step` (no-op if that step exists); returns whether a save started.

    Raises:
      CheckpointWriteError: the free space cannot hold a checkpoint of the size the last one took (or, before
        the first, of the state's bytes): the save is not started; or a save failed to write.
    """
    if step in self._manager.all_steps():
      return False
    self._check_space(step, state)
    meta = {**meta, "fingerprint": [int(v) for v in np.asarray(jax.device_get(fingerprint(state)))]}
    with self._write_failures(step):
      return self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                              meta=ocp.args.JsonSave(meta)), force=True)

  def _check_space(self, step: int, state: Any) -> None:
    """Refuses a save that cannot fit, and warns when the one after it will not."""
    free = free_bytes(self.directory)  # Every process checks: on a shared filesystem they all see the same.
    if free is None:
      return
    latest = self._manager.latest_step()
    state_bytes = sum(int(leaf.nbytes) for leaf in jax.tree.leaves(state) if hasattr(leaf, "nbytes"))
    needed = max(_bytes_under(self.directory / str(latest)) if latest is not None else 0, state_bytes)
    if needed > free:
      raise CheckpointWriteError(
          f"checkpoint {step} cannot be written in {self.directory}: a checkpoint takes about {_megabytes(needed)} "
          f"and {_megabytes(free)} are free; the last good checkpoint is {self._last_good()}. Free some space "
          "and rerun the same command to resume.")
    if 2 * needed > free:
      logging.warning("%s has room for this checkpoint (%s) but not for the next: %s free. Free some space before "
                      "step %d's save would fail.", self.directory, _megabytes(needed), _megabytes(free), step)

  def _last_good(self) -> str:
    latest = self._manager.latest_step()
    return f"step {latest}" if latest is not None else "none (the run would start again from step 0)"

  @contextlib.contextmanager
  def _write_failures(self, step: Optional[int]):
    """Within it, a failed write becomes one CheckpointWriteError line, and the partial files are removed."""
    try:
      yield
    except Exception as error:  # Orbax and TensorStore raise ValueErrors, RuntimeErrors, OSErrors ...
      reason = _write_failure_reason(error)
      if reason is None:
        raise
      for partial in self.directory.glob("*.orbax-checkpoint-tmp*"):
        shutil.rmtree(partial, ignore_errors=True)
      free = free_bytes(self.directory)
      which = "" if step is None else f" (step {step} or the one before)"
      raise CheckpointWriteError(
          f"a checkpoint{which} could not be written in {self.directory}: {reason}"
          + ("" if free is None else f"; {_megabytes(free)} free")
          + f"; the last good checkpoint is {self._last_good()} (partial files removed). Fix that and rerun the "
          "same command to resume.") from None

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores the state at `step` with the shapes, dtypes and shardings of `abstract_state`.

    Raises:
      CorruptCheckpointError: the restored arrays do not match the fingerprint written with them.
    """
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    verify_fingerprint(restored.state, restored.state, restored.meta)
    return restored.state, restored.meta

  def delete_newer_than(self, step: int) -> list[int]:
    """Deletes the checkpoints after `step` (e.g. of a trajectory abandoned by a rollback); returns their steps."""
    self.wait()
    newer = [s for s in self._manager.all_steps() if s > step]
    for s in newer:
      self._manager.delete(s)
    return sorted(newer)

  def restore_newest_readable(self, abstract_state: Any,
                              at_most: Optional[int] = None) -> Optional[tuple[int, Any, dict]]:
    """Restores the newest checkpoint (at or before step `at_most`, if given) that reads back whole and
    unchanged; None when there is no such checkpoint at all.

    A checkpoint with missing, truncated or altered files is reported, renamed to `<step>.unreadable` (kept for
    inspection; the step can then be saved again) and skipped for the one before it.

    Raises:
      UnreadableCheckpointsError: checkpoints exist but none can be read (never silently start from scratch).
    """
    steps = sorted((s for s in self._manager.all_steps() if at_most is None or s <= at_most), reverse=True)
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

  def reached_preemption(self, step: int) -> bool:
    """True on every process at the same step once any of them got a preemption notice (JAX's preemption sync
    point, with the distributed runtime on TPU/multi-host); always False in a single process without it."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until pending saves are on disk.

    Raises:
      CheckpointWriteError: one of them failed to write.
    """
    with self._write_failures(None):
      self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

