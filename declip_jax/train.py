"""The training loop, top to bottom: mesh, data, state, update step, checkpoints, evals.

`run(config, workdir)` trains to `train.num_steps`, resuming from the newest checkpoint in `workdir` if there
is one; `evaluate(config, workdir)` restores the newest checkpoint and writes `eval_results.json`.
"""

import functools
import json
import signal
import threading
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath

from declip_jax import checkpointing, config as config_lib, optim, parallel, state as state_lib, train_step
from declip_jax.data import pipeline
from declip_jax.evaluation import runner
from declip_jax.models import declip


class Setup:
  """What training and evaluation share: mesh, tokenizer, model, optimizer, abstract state and its shardings."""

  def __init__(self, config: ml_collections.ConfigDict, devices: Optional[list] = None):
    pipeline.hide_accelerators_from_tensorflow()
    self.mesh = parallel.make_mesh(config.mesh.shape, devices)
    config_lib.validate(config, parallel.num_batch_shards(self.mesh))
    self.tokenizer = pipeline.build_tokenizer(config)
    if self.tokenizer.vocab_size > config.model.text.vocab_size:
      raise config_lib.ConfigError(
          f"model.text.vocab_size ({config.model.text.vocab_size}) is smaller than the tokenizer's "
          f"{self.tokenizer.vocab_size} ids.")
    self.model = declip.build_model(config, self.tokenizer.eot_id)
    self.tx = optim.build_optimizer(config)
    self.init_fn = functools.partial(state_lib.create_train_state, config, self.model, self.tx,
                                     state_lib.sample_batch_spec(config, batch_size=1))
    self.rng = jax.random.PRNGKey(config.train.seed)
    abstract = jax.eval_shape(self.init_fn, self.rng)
    self.shardings = state_lib.state_shardings(abstract, self.mesh)
    self.abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                       abstract, self.shardings)

  def init_state(self) -> state_lib.TrainState:
    """A fresh train state, created directly with its shardings."""
    return jax.jit(self.init_fn, out_shardings=self.shardings)(self.rng)

  def jit_train_step(self, config: ml_collections.ConfigDict):
    """The jitted update: state donated, batch split over the batch axes, metrics replicated."""
    return jax.jit(train_step.make_train_step(config, self.model, self.tx, self.mesh),
                   in_shardings=(self.shardings, parallel.batch_sharding(self.mesh)),
                   out_shardings=(self.shardings, parallel.replicated(self.mesh)), donate_argnums=0)


class StopRequests:
  """Context manager recording SIGTERM (preemption notice) and SIGINT, so that the loop can finish its step,
  save a checkpoint and return instead of dying mid-step. Handlers are installed only in the main thread and
  restored on exit."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: Optional[str] = None
    self._previous = {}

  def _handle(self, signum, _frame):
    self.received = signal.Signals(signum).name
    logging.warning("%s received: stopping after this step with a checkpoint.", self.received)

  def __enter__(self) -> "StopRequests":
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)


def _write_json(path: epath.Path, payload: Any) -> None:
  if jax.process_index() == 0:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))


def _eval_scalars(results: dict) -> dict[str, float]:
  return {f"eval/{name}/{k}": v for name, r in results.items() for k, v in r["metrics"].items()}


def _mean_metrics(pending: list[dict]) -> dict[str, float]:
  host = jax.device_get(pending)
  return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains to train.num_steps, or until SIGTERM/SIGINT (then checkpoints the step reached and returns).

  Returns:
    {"eval": the last eval results, "loss_summary": per loss term first-10% mean and final value,
     "step": the step reached, "stopped_by": the signal's name or None}.
  """
  with StopRequests() as stop:  # From the start: a signal during setup stops after the first step.
    return _train(config, workdir, stop)


def _train(config: ml_collections.ConfigDict, workdir: str, stop: StopRequests) -> dict:
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  setup = Setup(config)
  mesh, tokenizer = setup.mesh, setup.tokenizer
  writer = metric_writers.create_default_writer(str(workdir), just_logging=jax.process_index() > 0)
  logging.info("Mesh %s on %d devices (%s).", dict(mesh.shape), mesh.size, jax.default_backend())

  # ----------------------------------------------------------------- state: resume or initialise
  ckpt = checkpointing.Checkpointer(str(workdir), config.checkpoint.keep, config.checkpoint.async_save)
  try:
    restored = ckpt.restore_newest_readable(setup.abstract_state)
  except checkpointing.UnreadableCheckpointsError:
    ckpt.close()
    raise
  if restored is not None:
    latest, state, _ = restored
    logging.info("Resumed from the checkpoint at step %d in %s.", latest, ckpt.directory)
  else:
    state = setup.init_state()
  start_step = int(jax.device_get(state.step))
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("Model: %.2fM parameters; starting at step %d of %d.", num_params / 1e6, start_step,
               config.train.num_steps)

  # ----------------------------------------------------------------- input pipeline
  dataset = pipeline.train_dataset(config, tokenizer, start_step, jax.process_index(), jax.process_count())
  batches = pipeline.numpy_batches(dataset)

  # ----------------------------------------------------------------- update step
  step_fn = setup.jit_train_step(config)
  evaluator = runner.Evaluator(config, setup.model, tokenizer)

  # ----------------------------------------------------------------- train loop
  num_steps = config.train.num_steps
  report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                           every_steps=config.train.log_every_steps)
  pending, history, results = [], [], {}
  meta = lambda step: {"step": step, "data_position": step * config.train.batch_size,
                       "config": config.to_dict()}
  step = start_step
  logging.info("Training from step %d to %d.", start_step, num_steps)
  for step in range(start_step + 1, num_steps + 1):
    batch = parallel.host_to_global(next(batches), mesh)
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      state, metrics = step_fn(state, batch)
    pending.append(metrics)
    report(step)
    last = step == num_steps or stop.received is not None
    if step % config.train.log_every_steps == 0 or last:
      summary = _mean_metrics(pending)
      pending = []
      history.append((step, summary))
      writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})
    if step % config.checkpoint.every_steps == 0 or last:
      ckpt.save(step, state, meta(step))
    if stop.received is not None:
      break
    if step % config.eval.every_steps == 0 or last:
      with report.timed("eval"):
        results = evaluator.run(state.params, step)
      writer.write_scalars(step, _eval_scalars(results))
      _write_json(workdir / "eval_results.json", results)
  writer.flush()
  ckpt.wait()
  ckpt.close()
  if stop.received:
    logging.warning("Stopped by %s at step %d; checkpoint saved in %s.", stop.received, step, ckpt.directory)
  elif not results:  # Nothing left to train: evaluate what was restored.
    results = evaluator.run(state.params, start_step)
  return {"eval": results, "loss_summary": loss_summary(history), "step": step, "stopped_by": stop.received}


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
  setup = Setup(config)
  ckpt = checkpointing.Checkpointer(workdir, config.checkpoint.keep, async_save=False)
  try:
    restored = ckpt.restore_newest_readable(setup.abstract_state)
  finally:
    ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"No checkpoint in {ckpt.directory}: train first, or pass the --workdir of a run.")
  latest, state, _ = restored
  results = runner.Evaluator(config, setup.model, setup.tokenizer).run(state.params, latest)
  _write_json(epath.Path(workdir) / "eval_results.json", results)
  return results
