"""Runs benchmark tasks on a model and writes DataComp's results format (docs/evaluation.md, "Benchmark a model").

A task's data is read through the data sources' registry: `clip_benchmark:<data_root>/<key>/test` when the data
root holds the task in CLIP_benchmark's layout, else the TFDS split the task names (`tasks.Task.tfds`). Images
get CLIP_benchmark's preprocessing: the shorter side to the model's image size (bicubic), a centre crop, the
model's normalisation. Every image of a task is encoded once, batched over the mesh, each process a disjoint
slice; every process computes the same metrics (`metrics`), and process 0 writes them.

A task that cannot run (no data, no class names, an unreadable shard, a main metric that needs metadata this
suite does not read) gives a result line with a one-line `error`, and the suite goes on.
"""

import dataclasses
import json
import time
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np
from etils import epath

from declip_jax import config as config_lib
from declip_jax.benchmark import linear_probe, metrics, prompts, tasks as tasks_lib
from declip_jax.data.errors import DataSourceError
from declip_jax.data import sources
from declip_jax.evaluation import datasets, retrieval, zero_shot


TARS = "clip_benchmark"  # The data sources' kind that reads CLIP_benchmark's layout (data/sources/clip_benchmark.py).


@dataclasses.dataclass
class Result:
  """One task's line: DataComp's `key`, `dataset` and `metrics` (with `main_metric`), and ours: `seconds`,
  `num_examples`, `data` (the dataset string read), `error` (None when it ran)."""

  key: str
  dataset: str
  metrics: dict[str, Any]
  seconds: float = 0.0
  num_examples: int = 0
  data: str = ""
  error: Optional[str] = None
  note: str = ""

  def line(self) -> dict:
    out = {"key": self.key, "dataset": self.dataset, "metrics": self.metrics, "seconds": round(self.seconds, 2),
           "num_examples": self.num_examples, "data": self.data}
    if self.error is not None:
      out["error"] = self.error
    if self.note:
      out["note"] = self.note
    return out


def task_data(task: tasks_lib.Task, data_root: str, split: str = "test") -> str:
  """The dataset string of a task's split: its CLIP_benchmark tars under `data_root` (`<data_root>/<task's
  directory>/<split>`), else the TFDS dataset's split of that name.

  Raises:
    DataSourceError: neither is there.
  """
  directory = epath.Path(data_root) / task.data_key if data_root else None
  if directory is not None and directory.exists():
    return f"{TARS}:{directory / split}"  # The tars' reader says what is missing, if anything.
  if task.tfds:
    return task.tfds if split == "test" else f"{task.tfds.rpartition('/')[0]}/{split}"
  where = f"{directory} does not exist" if directory is not None else "no --data_root was given"
  raise DataSourceError(f"no data for {task.key}: {where}, and TFDS does not have it (the task's tars, in "
                        "CLIP_benchmark's layout, are what DataComp's download_evalsets.py fetches; "
                        "python -m declip_jax.benchmark.make_tars writes them).")


def benchmark_config(config: ml_collections.ConfigDict, batch_size: int,
                     tfds_data_dir: str = "") -> ml_collections.ConfigDict:
  """The model's config with CLIP_benchmark's preprocessing (shorter side to the image size, centre crop: crop
  fraction 1) and the encoding batch; no evaluations of its own."""
  c = config.copy_and_resolve_references()
  c.data.eval_crop_fraction = 1.0
  c.eval.batch_size = batch_size
  if tfds_data_dir:
    c.data.tfds.data_dir = tfds_data_dir
  c.evals = ml_collections.ConfigDict()
  return c


class Suite:
  """The tasks' evaluation (`run`) with a model's variables through `evals`, an `evaluations.Evaluations` (its
  tokenizer and mesh-sharded encoders); `config`: `benchmark_config`'s (CLIP_benchmark's preprocessing);
  `probe`: the linear probes' settings (CLIP_benchmark's defaults unless given)."""

  def __init__(self, config: ml_collections.ConfigDict, evals, variables, data_root: str,
               probe: Optional[linear_probe.Settings] = None):
    self.config, self.evals, self.variables, self.data_root = config, evals, variables, data_root
    self.probe = probe or linear_probe.Settings()

  def run(self, task: tasks_lib.Task) -> Result:
    """Evaluates one task; a failure is the result's one-line error."""
    start = time.monotonic()
    result = Result(task.key, task.name, {})
    try:
      result.data = task_data(task, self.data_root)
      result.note = self._size_note(result.data, task.kind)
      if task.kind == "zero_shot":
        result.metrics, result.num_examples = self._classification(task, result.data)
      elif task.kind == "retrieval":
        result.metrics, result.num_examples = self._retrieval(task, result.data)
      elif task.kind == "linear_probe":
        result.metrics, result.num_examples = self._linear_probe(task, result.data)
      else:
        raise DataSourceError(f"{task.key}: its protocol ({task.main_metric}) is not implemented here.")
      if task.main_metric in tasks_lib.NEEDS_METADATA:
        raise DataSourceError(f"{task.key}: main metric {task.main_metric} needs the dataset's metadata (groups, "
                              "regions), which this suite does not read yet; the other metrics are given.")
      result.metrics["main_metric"] = result.metrics[task.main_metric]
    except Exception as e:  # One line per failed task; the suite goes on.  # pylint: disable=broad-except
      result.error = _one_line(e)
    result.seconds = time.monotonic() - start
    return result

  def _size_note(self, dataset: str, kind: str) -> str:
    """Says when the task's first image is not the model's input size (it is then resized, as CLIP_benchmark
    does: the shorter side to the model's size, bicubic, and a centre crop)."""
    source, location = sources.parse_dataset(dataset, f"{dataset}")
    spec = self._spec(kind, dataset)
    records = (source.labelled_images(location, spec, self.config, dataset) if kind != "retrieval"
               else source.captioned_images(location, spec, self.config, dataset))
    decoded = records.records.take(8).enumerate().map(lambda i, record: records.decode(record)).ignore_errors()
    first = next(iter(decoded.take(1)), None)
    size = self.config.model.image.image_size
    if first is None or tuple(first["image"].shape[:2]) == (size, size):
      return ""
    h, w = first["image"].shape[:2]
    return f"images are {h} x {w} (the first); the model takes {size} x {size}: resized (bicubic) and centre-cropped"

  def _spec(self, kind: str, dataset: str) -> ml_collections.ConfigDict:
    return config_lib.eval_spec(kind, dataset)

  def _classification(self, task: tasks_lib.Task, dataset: str) -> tuple[dict, int]:
    spec = self._spec("zero_shot", dataset)
    data = datasets.labelled_images(spec, self.config, task.key, process_index=jax.process_index(),
                                    process_count=jax.process_count())
    tars = dataset.startswith(TARS + ":")
    location = dataset.partition(":")[2]
    names = prompts.class_names(task.key, data.class_names, data_has_own=tars)
    own = sources.get(TARS).templates(location) if tars else None
    weights = zero_shot.classifier_weights(lambda texts: self.evals.encode_texts(self.variables, texts), names,
                                           prompts.templates(task.key, own))
    image_emb, labels = self._encode_labelled(data.dataset, dataset)
    if labels.max() >= len(names):
      raise DataSourceError(f"{dataset}: label {int(labels.max())} but {len(names)} class names.")
    scores = image_emb @ weights.astype(np.float32).T
    return metrics.classification(scores, labels), len(labels)

  def _encode_labelled(self, ds, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """A labelled split's L2-normalised image embeddings [N, D] (float32) and labels [N], in dataset order."""
    image_emb, _, labels = self.evals.encode_images(self.variables, ds, extra="label")
    if not len(labels):
      raise DataSourceError(f"{dataset} yielded no usable example (undecodable images or missing labels).")
    image_emb = image_emb.astype(np.float32)
    return image_emb / np.linalg.norm(image_emb, axis=-1, keepdims=True), np.asarray(labels)

  def _labelled_split(self, task: tasks_lib.Task, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    spec = self._spec("linear_probe", dataset)
    data = datasets.labelled_images(spec, self.config, task.key, process_index=jax.process_index(),
                                    process_count=jax.process_count())
    return self._encode_labelled(data.dataset, dataset)

  def _linear_probe(self, task: tasks_lib.Task, dataset: str) -> tuple[dict, int]:
    """CLIP_benchmark's linear probe: fitted on the task's train split (and its validation split, if the settings
    name one), measured on `dataset` (its test split)."""
    train = self._labelled_split(task, task_data(task, self.data_root, "train"))
    validation = None
    if self.probe.val_split:
      validation = self._labelled_split(task, task_data(task, self.data_root, self.probe.val_split))
    test_emb, test_labels = self._labelled_split(task, dataset)
    return linear_probe.evaluate(*train, test_emb, test_labels, task.fewshot_k, self.probe, validation), len(test_labels)

  def _retrieval(self, task: tasks_lib.Task, dataset: str) -> tuple[dict, int]:
    spec = self._spec("retrieval", dataset)
    data = datasets.captioned_images(spec, self.config, task.key, jax.process_index(), jax.process_count())
    image_emb, image_index, text_emb, text_to_image = retrieval.encode_captioned_images(self.evals, self.variables,
                                                                                         data.dataset)
    if not len(image_index):
      raise DataSourceError(f"{dataset} yielded no usable example (undecodable images or no captions).")
    normalize = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    return metrics.retrieval(normalize(image_emb), normalize(text_emb), text_to_image), len(image_index)


def aggregates(results: list[Result]) -> dict[str, dict[str, Any]]:
  """DataComp's aggregates over the tasks that ran: "ImageNet", "ImageNet dist. shifts", "VTAB", "Retrieval" and
  "Average" (of every averaged task's main metric), each {"value", "tasks": how many it averages, "of": how
  many DataComp averages}."""
  scored = {r.dataset: r.metrics["main_metric"] for r in results if r.error is None and "main_metric" in r.metrics}
  groups: dict[str, list[str]] = {group: [] for group in tasks_lib.GROUPS}
  for task in tasks_lib.DATACOMP:
    for group in task.groups:
      groups[group].append(task.name)
  averaged = [t.name for t in tasks_lib.DATACOMP if t.in_average]
  out = {}
  for name, members in list(groups.items()) + [("Average", averaged)]:
    values = [scored[m] for m in members if m in scored]
    out[name] = {"value": float(np.mean(values)) if values else None, "tasks": len(values), "of": len(members)}
  return out


def _one_line(error: Exception) -> str:
  text = " ".join(str(error).split()) or type(error).__name__
  return text if isinstance(error, (DataSourceError, config_lib.ConfigError)) else f"{type(error).__name__}: {text}"


def write_lines(path: epath.Path, results: list[Result]) -> None:
  """The JSON lines, rewritten whole (atomically) after each task."""
  from declip_jax import atomic_files  # pylint: disable=g-import-not-at-top
  atomic_files.write_text(path, "".join(json.dumps(r.line(), sort_keys=True) + "\n" for r in results))


Progress = Callable[[int, int, Result], None]


def unlisted_task(key: str, data_root: str) -> Optional[tasks_lib.Task]:
  """A task DataComp does not list but whose tars are under `data_root` (its dataset_type.txt says which kind),
  or a linear probe on one (`linear_probe/<key>`, `linear_probe_<k>shot/<key>`); None when there is no such
  directory."""
  probe = tasks_lib.LINEAR_PROBE.fullmatch(key)
  if probe is not None:
    return tasks_lib.linear_probe(key, find_task(probe.group(2), data_root))
  directory = epath.Path(data_root) / key if data_root else None
  if directory is None or not directory.is_dir():
    return None
  kind = sources.get(TARS).dataset_type(str(directory / "test"))
  return tasks_lib.custom(key, "retrieval" if kind == "retrieval" else "zero_shot")


def find_task(key: str, data_root: str) -> Optional[tasks_lib.Task]:
  """The task a `--tasks` key names: DataComp's (or a probe on one), else one under `data_root`; None if neither."""
  return tasks_lib.task_of(key) or unlisted_task(key, data_root)


def unknown_task(key: str, data_root: str) -> Result:
  """The line of a task name that is neither DataComp's nor a directory under the data root."""
  where = f"nor a directory under {data_root}" if data_root else "and no --data_root was given"
  return Result(key, key, {}, error=f"unknown task {key!r}: not one of DataComp's tasks ("
                f"{', '.join(t.key for t in tasks_lib.DATACOMP[:3])}, ...; --tasks=datacomp lists all) {where}.")


def progress_line(i: int, n: int, task: Optional[tasks_lib.Task], result: Result) -> str:
  head = f"[{i}/{n}] {result.key}"
  if result.error is not None:
    return f"{head}: error: {result.error}"
  note = f"; {result.note}" if result.note else ""
  return (f"{head}: {task.main_metric} {result.metrics['main_metric']:.4f} on {result.num_examples} examples "
          f"({result.seconds:.1f} s{note})")


def run(evals, name: str, spec: ml_collections.ConfigDict, variables) -> dict:
  """The `benchmark` evaluator (`evaluations.EVALUATORS`): the tasks `spec.dataset` names, from `spec.data_root`,
  with CLIP_benchmark's preprocessing; metrics `<task key>/<metric>` and `aggregate/<name>`.

  Raises:
    DataSourceError: a task failed (one line naming it and why), so that the run stops at start, not later.
  """
  suite = Suite(benchmark_config(evals.config, evals.config.eval.batch_size), evals, variables, spec.data_root)
  results = []
  for key in tasks_lib.parse(spec.dataset):
    task = find_task(key, spec.data_root)
    result = suite.run(task) if task is not None else unknown_task(key, spec.data_root)
    if result.error is not None:
      raise DataSourceError(f"evals.{name}: {key}: {result.error}")
    results.append(result)
  metrics_out = {f"{r.key}/{m}": v for r in results for m, v in r.metrics.items()}
  metrics_out.update({f"aggregate/{group}": a["value"] for group, a in aggregates(results).items()
                      if a["value"] is not None})
  return {"dataset": spec.dataset, "split": "test", "num_examples": sum(r.num_examples for r in results),
          "tasks": [r.key for r in results], "metrics": metrics_out}


def check_available(spec: ml_collections.ConfigDict, name: str) -> None:
  """At start: every task `spec.dataset` names has data (tars under spec.data_root, or TFDS).

  Raises:
    DataSourceError: one line naming the evaluation and the task.
  """
  keys = tasks_lib.parse(spec.dataset)
  if not keys:
    raise DataSourceError(f"evals.{name}.dataset {spec.dataset!r} names no benchmark task.")
  for key in keys:
    task = find_task(key, spec.data_root)
    if task is None:
      raise DataSourceError(f"evals.{name}: {unknown_task(key, spec.data_root).error}")
    try:
      for split in ("test", "train") if task.kind == "linear_probe" else ("test",):
        dataset = task_data(task, spec.data_root, split)
        if dataset.startswith(TARS + ":"):
          location = dataset.partition(":")[2]
          sources.get(TARS).shard_files(location, f"evals.{name}: {key}")
          if task.kind == "zero_shot":
            sources.get(TARS).class_names(location, f"evals.{name}: {key}")
    except DataSourceError as e:
      raise DataSourceError(f"evals.{name}: {e}") from None
