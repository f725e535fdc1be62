"""The training loop, top to bottom: mesh, data, state, update step, checkpoints, evals.

`run(config, workdir)` trains to `train.num_steps`, resuming from the newest checkpoint in `workdir` if there
is one; `evaluate(config, workdir)` restores the newest checkpoint and writes `eval_results.json`.
"""

import json
import os
import signal
import threading
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath

from declip_jax import atomic_files, config as config_lib, parallel
from declip_jax.training import checkpointing, nn_queue, recovery, state as state_lib, train_setup, train_step
from declip_jax.data import pipeline, sources, tokenizers
from declip_jax.evaluation import encoding, evaluations


def setup_with_tokenizer(config: ml_collections.ConfigDict) -> tuple[train_setup.Setup, tokenizers.Tokenizer]:
  """Checks the config's data and evaluation sections and reads the start of their data (a wrong dataset costs
  seconds), then sets up the training core (mesh, model, optimizer, abstract state; it checks its own sections)
  and builds the tokenizer of the input pipeline and the evaluations (TensorFlow, kept off the accelerators)."""
  pipeline.hide_accelerators_from_tensorflow()
  config_lib.validate_inputs(config)
  evaluations.check_data(config)
  return train_setup.Setup(config), tokenizers.build(config)


class StopRequests:
  """Context manager recording SIGTERM (preemption notice) and SIGINT, so that the loop can finish its step,
  save a checkpoint and return instead of dying mid-step (docs/reliability.md, "Preemption").

  Handlers are installed only in the main thread and restored on exit. In a single-process run both signals are
  recorded here. With several processes a local signal would stop one host at a step the others do not know:
  there JAX's preemption service catches SIGTERM (started by `jax.distributed.initialize`) and
  `Checkpointer.reached_preemption` makes every process stop at the same step; SIGINT is handed to it as a
  SIGTERM, so that Ctrl-C stops a multi-process run the same way.

  Attributes:
    received: the first request's name ("SIGTERM", "SIGINT", "preemption notice"), None before one came.
    received_at: its `time.monotonic()`.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: Optional[str] = None
    self.received_at: Optional[float] = None
    self._previous = {}

  def request(self, reason: str) -> None:
    """Records a stop request (what a signal handler calls); a later one only says that the stop is under way."""
    if self.received is None:
      self.received, self.received_at = reason, time.monotonic()
      logging.warning("%s received: stopping after this step with a checkpoint.", reason)
    else:
      logging.warning("%s received while stopping (%s): the checkpoint is being written; a SIGKILL now abandons "
                      "it and keeps the newest complete one.", reason, self.received)

  def _handle(self, signum, _frame):
    self.request(signal.Signals(signum).name)

  @staticmethod
  def _forward_to_preemption_service(_signum, _frame):
    os.kill(os.getpid(), signal.SIGTERM)

  def __enter__(self) -> "StopRequests":
    if threading.current_thread() is not threading.main_thread():
      return self
    if jax.process_count() == 1:
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    else:
      self._previous = {signal.SIGINT: signal.signal(signal.SIGINT, self._forward_to_preemption_service)}
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      # After a stop the process only exits (about a second of teardown): a second Ctrl-C or SIGTERM then changes
      # nothing, instead of interrupting the exit with a traceback or a kill.
      signal.signal(s, signal.SIG_IGN if self.received is not None else handler)


def _write_json(path: epath.Path, payload: Any) -> None:
  """Process 0 writes `payload` to `path` atomically: a temp file beside it, then a rename, so that a kill or a
  full disk mid-write leaves the previous file whole."""
  if jax.process_index() == 0:
    atomic_files.write_text(path, json.dumps(payload, indent=2, sort_keys=True))


def _eval_scalars(results: dict) -> dict[str, float]:
  return {f"eval/{name}/{k}": v for name, r in results.items() for k, v in r["metrics"].items()}


def _mean_metrics(pending: list[dict]) -> dict[str, float]:
  host = jax.device_get(pending)
  return {k: float(np.mean([m[k] for m in host])) for k in host[0] if k != "rollback_cause"}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains to train.num_steps, or until a stop request: SIGTERM, SIGINT or (several processes) a preemption
  notice, read once per step; the step reached is then checkpointed and the run returns. Evaluations due at that
  step are left to the rerun, which runs them first.

  Loss spikes and non-finite streaks roll back to an older checkpoint (`train.recovery`).

  Returns:
    {"eval": the last eval results, "loss_summary": per loss term first-10% mean and final value,
     "step": the step reached, "stopped_by": the request's name or None, "rollbacks": [(step, cause), ...],
     "checkpoint_step": the newest committed checkpoint's step on disk at the end (None: none),
     "checkpoint_dir": where, "trained_steps": steps trained by this call, "stop_seconds": from the request to
     the end, its checkpoint committed (None without a request)}.

  Raises:
    recovery.TrainingAbortedError: more than train.recovery.max_rollbacks rollbacks were needed.
  """
  with StopRequests() as stop:  # From the start: a signal during setup stops after the first step.
    return _train(config, workdir, stop)


def _rollback_reason(cause: int, step: int, metrics: dict, config: ml_collections.ConfigDict) -> str:
  r = config.train.recovery
  if cause == recovery.LOSS_SPIKE:
    return (f"loss spike at step {step}: loss {float(metrics['loss']):.4g} > running mean "
            f"{float(metrics['recent_loss_mean']):.4g} + {r.spike_threshold:g}")
  if cause == recovery.NONFINITE_STREAK:
    return f"non-finite loss or gradients for {r.max_consecutive_nonfinite} consecutive steps up to step {step}"
  return f"non-finite parameters or optimizer state at step {step}"


def _warn_if_the_queue_outgrows_the_data(config: ml_collections.ConfigDict) -> None:
  """Logs a warning when NNS would mostly find each pair's own caption (data whose size is known: built-in)."""
  pairs = sources.known_size(config)
  if config.loss.weights.nns <= 0 or pairs is None:
    return
  views = config_lib.text_views(config)
  fraction = nn_queue.own_pair_fraction(config.nns.group_size, views, pairs)
  if fraction > 0.1:
    logging.warning("NNS: each queue buffer holds %d of the %d training pairs' captions, so %.0f%% of the lookups "
                    "will find the pair's own caption and repeat the CLIP term. For small data set "
                    "nns.group_size below %d (%d text views x %d pairs / 10) for under 10%%.",
                    config.nns.group_size // views, pairs, 100 * fraction,
                    int(0.1 * views * pairs), views, pairs)


def _read_eval_results(workdir: epath.Path) -> dict:
  """The run's eval_results.json ({} when there is none or it cannot be parsed)."""
  try:
    return json.loads((workdir / "eval_results.json").read_text())
  except (OSError, ValueError):
    return {}


class _StepTimer:
  """Wall seconds per training step: the mean time between the loop's dispatches, leaving out the first one
  (compilation) and those that held a checkpoint wait or an evaluation. The loop waits for the device at its
  logging steps, so in steady state this is the time of a step."""

  def __init__(self):
    self._last: Optional[float] = None
    self._total, self._count = 0.0, 0

  def tick(self) -> None:
    now = time.monotonic()
    if self._last is not None:
      self._total += now - self._last
      self._count += 1
    self._last = now

  def skip_next(self) -> None:
    """The next interval holds other work (a save, an evaluation): do not count it."""
    self._last = None

  def seconds_per_step(self) -> Optional[float]:
    return self._total / self._count if self._count else None


class _Trainer:
  """The loop's state between steps: the train state, its checkpoints, the batches and the logs."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: epath.Path, stop: StopRequests):
    self.config, self.workdir, self.stop = config, workdir, stop
    self.setup, self.tokenizer = setup_with_tokenizer(config)
    setup = self.setup
    _warn_if_the_queue_outgrows_the_data(config)
    self.writer = metric_writers.create_default_writer(str(workdir), just_logging=jax.process_index() > 0)
    logging.info("Mesh %s on %d devices (%s).", dict(setup.mesh.shape), setup.mesh.size, jax.default_backend())
    self.ckpt = checkpointing.Checkpointer(str(workdir), config.checkpoint.keep, config.checkpoint.async_save)
    try:
      restored = self.ckpt.restore_newest_readable(setup.abstract_state)
    except checkpointing.UnreadableCheckpointsError:
      self.ckpt.close()
      raise
    meta = {}
    if restored is not None:
      latest, self.state, meta = restored
      logging.info("Resumed from the checkpoint at step %d in %s.", latest, self.ckpt.directory)
    else:
      self.state = setup.init_state()
    self.start_step = int(jax.device_get(self.state.step))
    num_params = sum(x.size for x in jax.tree.leaves(self.state.params))
    logging.info("Model: %.2fM parameters; starting at step %d of %d.", num_params / 1e6, self.start_step,
                 config.train.num_steps)
    self.step_fn = setup.jit_train_step(config)
    self.masked_steps = train_step.masked_steps(config)
    self._unmasked_step_fn = None
    self.state_is_finite = jax.jit(lambda s: recovery.all_finite((s.params, s.opt_state, s.batch_stats, s.nn_queue)))
    # Compiled now, not at the first save: that may be a stop's, with a deadline (docs/reliability.md, "Preemption").
    self.state_is_finite(self.state)
    self.ckpt.prepare(self.state)
    self.evaluations = evaluations.Evaluations(config, setup.model, self.tokenizer, setup.mesh,
                                         should_stop=lambda: stop.received is not None)
    self.eval_results = _read_eval_results(workdir) if restored is not None else {}
    # The evaluations due at the step reached, not (all) run: a stop (or a kill) came before they ended.
    self.step_evals = [name for name in meta.get("evals_due", [])
                       if self.eval_results.get(name, {}).get("step", -1) < self.start_step]
    self.step_timer = _StepTimer()
    self.evals_abandoned = False
    self.save_seconds: Optional[float] = None
    self.rollbacks: list[tuple[int, str]] = []
    self.history: list[tuple[int, dict]] = []
    self.bad_records: Optional[np.ndarray] = None
    self._restart_from(self.start_step, meta)

  def _step_fn(self, step: int):
    """The jitted update for `step`: after the masked steps (model.image.mask_ratio > 0), FLIP's unmasked tuning
    phase runs an update without patch masking (compiled when first needed)."""
    if not self.masked_steps or step <= self.masked_steps:
      return self.step_fn
    if self._unmasked_step_fn is None:
      unmasked = self.config.copy_and_resolve_references()
      unmasked.model.image.mask_ratio = 0.0
      logging.info("Step %d: unmasked tuning (model.image.unmasked_final_fraction) to step %d.", step,
                   self.config.train.num_steps)
      self._unmasked_step_fn = self.setup.jit_train_step(unmasked)
    return self._unmasked_step_fn

  def _restart_from(self, step: int, meta: dict) -> None:
    """Points the input pipeline (at the position saved in `meta`, if any) and the progress report at `step`
    (the state's step)."""
    self.step = step
    config = self.config
    data_states = meta.get("data_state")
    dataset = pipeline.train_dataset(config, self.tokenizer, 0 if data_states else step,
                                     jax.process_index(), jax.process_count())
    self.batches = pipeline.TrainBatches(dataset)
    if data_states:
      self.batches.restore(data_states[jax.process_index()])
    self.report = periodic_actions.ReportProgress(num_train_steps=config.train.num_steps, writer=self.writer,
                                                  every_steps=config.train.log_every_steps)
    self.pending: list[dict] = []
    self.history = [(s, m) for s, m in self.history if s <= step]
    self.steps_since_restore = 0

  def _meta(self, step: int) -> dict:
    """The checkpoint's JSON record: step, data position, config, the evaluations due after this step (a rerun
    runs those that did not finish), and with streamed data each process's iterator position."""
    meta = {"step": step, "data_position": step * self.config.train.batch_size, "config": self.config.to_dict(),
            "evals_due": list(self.step_evals)}
    if sources.is_streamed(self.config):  # Each process's iterator position (data drawn by position: the step).
      meta["data_state"] = parallel.gather_strings(self.batches.save())
    return meta

  def roll_back(self, cause: int, failed_step: int, metrics: dict) -> None:
    """Restores the newest checkpoint at least recovery.min_steps_back steps before `failed_step` (the initial
    state if there is none), deletes the newer ones, and scales the learning rate by recovery.lr_factor."""
    r = self.config.train.recovery
    reason = _rollback_reason(cause, failed_step, metrics, self.config)
    health = jax.device_get(self.state.health)
    count = int(health.rollbacks) + 1
    if count > r.max_rollbacks:
      self.close()
      raise recovery.TrainingAbortedError(
          f"{reason}; giving up after {r.max_rollbacks} rollbacks (train.recovery.max_rollbacks). Checkpoints "
          f"{self.ckpt.all_steps()} in {self.ckpt.directory} are kept.")
    self.ckpt.wait()
    limit = failed_step - r.min_steps_back
    restored = None
    if limit >= 0:
      try:
        restored = self.ckpt.restore_newest_readable(self.setup.abstract_state, at_most=limit)
      except checkpointing.UnreadableCheckpointsError as e:
        logging.warning("%s Rolling back to the initial state instead.", e)
    target, state, meta = restored if restored else (0, self.setup.init_state(), {})
    deleted = self.ckpt.delete_newer_than(target)
    lr_scale = float(health.lr_scale * r.lr_factor)
    new_health = state.health.replace(lr_scale=np.float32(lr_scale), rollbacks=np.int32(count))
    self.state = state.replace(health=jax.device_put(new_health, self.setup.shardings.health))
    logging.warning("%s: rolling back to %s (rollback %d of at most %d), learning rate x%.6f from now on%s.",
                    reason, f"the checkpoint at step {target}" if restored else "the initial state", count,
                    r.max_rollbacks, lr_scale, f"; deleted the checkpoints at steps {deleted}" if deleted else "")
    self.writer.write_scalars(failed_step, {"recovery/rollbacks": count, "recovery/lr_scale": lr_scale,
                                            "recovery/rolled_back_to": target})
    self.rollbacks.append((failed_step, reason))
    self._restart_from(target, meta)

  def train(self) -> dict:
    """Trains to train.num_steps or to a stop request; returns `run`'s dict."""
    num_steps = self.config.train.num_steps
    if self.start_step >= num_steps:  # Nothing left to train: evaluate what was restored.
      self._evaluate_unless_stopped(self.step, None)
    elif self.step_evals:
      logging.info("Step %d's evaluations %s did not finish before the run stopped: running them first.",
                   self.step, self.step_evals)
      self._evaluate_unless_stopped(self.step, self.step_evals)
    else:
      logging.info("Training from step %d to %d.", self.step, num_steps)
    unchecked: Optional[tuple[int, dict]] = None  # The previous step, whose verdict is read while the next runs.
    while True:
      if self.step >= num_steps:  # Done; stopped only if a request abandoned the last evaluations.
        stopped_by = self.stop.received if self.evals_abandoned else None
        break
      stopped_by = self._read_stop_request(self.step)  # The one reading per step: it decides the save and the stop.
      if stopped_by is not None:
        break
      step = self.step = self.step + 1
      metrics = self._dispatch_step(step)
      last = step == num_steps
      log = step % self.config.train.log_every_steps == 0 or last
      save = step % self.config.checkpoint.every_steps == 0 or last
      self.step_evals = self.evaluations.due(step, last)
      checks = [unchecked] + ([(step, metrics)] if log or save or self.step_evals else [])
      unchecked = None if log or save or self.step_evals else (step, metrics)
      if self._rolled_back(checks, save):
        unchecked = None
        continue
      self.report(step)
      if log:
        self._write_train_scalars(step)
      if save:
        self._save(step)
      if self.step_evals:
        self._evaluate_unless_stopped(step, self.step_evals)
    if stopped_by is not None and self.steps_since_restore and not self._rolled_back([unchecked], True):
      self._save(self.step)  # The step reached (a no-op when its periodic checkpoint exists).
    checkpoint_step = self.close()
    if stopped_by is not None:
      logging.warning("Stopped by %s at step %d; the newest checkpoint is %s.", stopped_by, self.step,
                      "none" if checkpoint_step is None else f"step {checkpoint_step} in {self.ckpt.directory}")
    return {"eval": self.eval_results, "loss_summary": loss_summary(self.history), "step": self.step,
            "stopped_by": stopped_by, "rollbacks": self.rollbacks, "checkpoint_step": checkpoint_step,
            "checkpoint_dir": str(self.ckpt.directory), "trained_steps": self.step - self.start_step,
            "stop_seconds": self._stop_seconds()}

  def _rolled_back(self, checks: list[Optional[tuple[int, dict]]], saving: bool) -> bool:
    """Reads the rollback verdicts of the (step, metrics) in `checks` and, before a save, whether the state is
    finite; on a failure rolls back (`roll_back`) and returns True."""
    failure = next(((s, m, c) for s, m in filter(None, checks) if (c := int(m["rollback_cause"]))), None)
    if failure is None and saving and not bool(self.state_is_finite(self.state)):
      failure = (self.step, None, recovery.NONFINITE_PARAMS)
    if failure is None:
      return False
    self.roll_back(failure[2], failure[0], failure[1])
    return True

  def _dispatch_step(self, step: int) -> dict:
    """Starts the update of `step` on the next batch (asynchronously); returns its metrics (device arrays)."""
    local_batch = next(self.batches)
    if "bad_records" in local_batch:
      self.bad_records = local_batch.pop("bad_records")[-1]
    batch = parallel.host_to_global(local_batch, self.setup.mesh)
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      self.state, metrics = self._step_fn(step)(self.state, batch)
    self.pending.append(metrics)
    self.steps_since_restore += 1
    self.step_timer.tick()
    return metrics

  def _read_stop_request(self, step: int) -> Optional[str]:
    """A signal recorded by StopRequests, or (several processes) JAX's preemption sync point, reached at the same
    step on every process; None when neither. Called once per step, before the next one is dispatched: `step`
    is the state's step, the step reached if the run stops here."""
    if self.stop.received is None and self.ckpt.reached_preemption(step):
      self.stop.request("preemption notice")
    return self.stop.received

  def _write_train_scalars(self, step: int) -> None:
    summary = _mean_metrics(self.pending)
    self.pending = []
    self.history.append((step, summary))
    self.writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})
    if self.bad_records is not None:
      totals = parallel.sum_over_processes(self.bad_records)
      self.writer.write_scalars(step, pipeline.bad_record_scalars(totals))

  def _save(self, step: int) -> None:
    """Starts the checkpoint of `step` (a no-op when it exists). The run's first save is waited for: its time
    tells what a stop would take (`_warn_if_a_stop_outlasts_the_grace`)."""
    started = time.monotonic()
    if not self.ckpt.save(step, self.state, self._meta(step)) or self.save_seconds is not None:
      return
    self.ckpt.wait()
    self.save_seconds = time.monotonic() - started
    self.step_timer.skip_next()
    self._warn_if_a_stop_outlasts_the_grace()

  def _warn_if_a_stop_outlasts_the_grace(self) -> None:
    """A stop takes the rest of the step in flight (at most a step) and a checkpoint write: warns once when that
    is more than checkpoint.preemption_grace_seconds, the time a platform allows between notice and kill."""
    grace = self.config.checkpoint.preemption_grace_seconds
    step_seconds = self.step_timer.seconds_per_step()
    if not grace or step_seconds is None:
      return
    estimate = step_seconds + self.save_seconds
    if estimate > grace:
      logging.warning("A stop (SIGTERM, Ctrl-C, a preemption notice) would take about %.1f s here (up to a step "
                      "of %.1f s and a checkpoint write of %.1f s), more than checkpoint.preemption_grace_seconds="
                      "%g: a preemption would lose the steps since the last periodic checkpoint. Write checkpoints "
                      "to faster storage, or checkpoint more often (checkpoint.every_steps).", estimate, step_seconds,
                      self.save_seconds, grace)

  def _stop_seconds(self) -> Optional[float]:
    """Seconds from the first stop request to now (its checkpoint committed); None without a request."""
    return None if self.stop.received_at is None else time.monotonic() - self.stop.received_at

  def _evaluate_unless_stopped(self, step: int, names: Optional[list[str]]) -> None:
    """Runs the named evaluations (None: all) unless a stop request comes first: then they are abandoned between
    batches, and the step's checkpoint, which lists them, makes the rerun run them first."""
    self.step_timer.skip_next()
    try:
      with self.report.timed("eval"):
        self._evaluate(step, names)
    except encoding.EvaluationInterrupted:
      self.evals_abandoned = True
      logging.warning("Step %d's evaluations abandoned for the stop; the rerun runs them first.", step)

  def _evaluate(self, step: int, names: Optional[list[str]]) -> None:
    """Runs the named evaluations (None: all), logs them and rewrites eval_results.json with the newest result
    of every evaluation."""
    results = self.evaluations.run(state_lib.model_variables(self.state), step, names)
    self.eval_results.update(results)
    self.writer.write_scalars(step, _eval_scalars(results))
    _write_json(self.workdir / "eval_results.json", self.eval_results)

  def close(self) -> Optional[int]:
    """Flushes the logs, waits for pending checkpoint writes and returns the newest committed checkpoint's step
    (None: none). Raises CheckpointWriteError when a write failed."""
    self.writer.flush()
    try:
      self.ckpt.wait()
      return self.ckpt.newest_on_disk()
    finally:
      self.ckpt.close()


def _train(config: ml_collections.ConfigDict, workdir: str, stop: StopRequests) -> dict:
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  return _Trainer(config, workdir, stop).train()


def loss_summary(history: list[tuple[int, dict]]) -> dict[str, dict[str, float]]:
  """For each loss metric: mean over the logged windows in the first 10% of steps, and the last window."""
  if not history:
    return {}
  cutoff = max(1, int(0.1 * history[-1][0]))
  early = [m for s, m in history if s <= cutoff] or [history[0][1]]
  return {k: {"first_10pct_mean": float(np.mean([m[k] for m in early])), "final": history[-1][1][k]}
          for k in history[-1][1] if k.startswith("loss")}


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Restores the newest checkpoint in workdir, runs every evaluation, writes workdir/eval_results.json."""
  setup, tokenizer = setup_with_tokenizer(config)
  ckpt = checkpointing.Checkpointer(workdir, config.checkpoint.keep, async_save=False)
  try:
    restored = ckpt.restore_newest_readable(setup.abstract_state)
  finally:
    ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"No checkpoint in {ckpt.directory}: train first, or pass the --workdir of a run.")
  latest, state, _ = restored
  results = evaluations.Evaluations(config, setup.model, tokenizer, setup.mesh).run(
      state_lib.model_variables(state), latest)
  _write_json(epath.Path(workdir) / "eval_results.json", results)
  return results
