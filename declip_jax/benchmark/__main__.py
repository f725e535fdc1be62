"""Benchmark a model on the field's tasks: `python -m declip_jax.benchmark --workdir=RUN --tasks=datacomp
--data_root=DIR [--output=FILE.jsonl]` (docs/evaluation.md, "Benchmark a model").

Or a model from released weights, imported first (`declip_jax.interop.convert`'s importer) into --workdir:
`--weights=ViT-B-32.safetensors --config=configs/clip_vit_b32.py [--weights_format=open_clip]`.

--tasks: comma-separated task keys (DataComp's, e.g. `imagenet1k,vtab/cifar100`, or any directory under
--data_root in CLIP_benchmark's layout), list names (`datacomp`: all 40 of DataComp's runs; `datacomp_averaged`:
its 38), or a file of them, one per line. `linear_probe/KEY` is CLIP_benchmark's linear probe on classification
task KEY (fitted on its train split), `linear_probe_<k>shot/KEY` the few-shot one (k examples per class); the
--linear_probe_* flags are CLIP_benchmark's --fewshot_lr, --fewshot_epochs, --batch_size, --seed, --val_split and
--val_proportion, with its defaults. Writes FILE.jsonl (one line per task, DataComp's format), FILE.md and
FILE.csv (tasks and DataComp's aggregates), and a progress line per task. Exit status 1 when a task failed (its
line says why), 2 on bad flags.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "The training run (its newest checkpoint, or --step's).")
_STEP = flags.DEFINE_integer("step", None, "The checkpoint step; default: the newest.")
_TASKS = flags.DEFINE_string("tasks", None, "Task keys, list names (datacomp, datacomp_averaged) or a file.")
_DATA_ROOT = flags.DEFINE_string("data_root", "", "Where the tasks' tars are: <data_root>/<task key>/test/.")
_OUTPUT = flags.DEFINE_string("output", "", "The results' .jsonl file (default: <workdir>/benchmark.jsonl); "
                              ".md and .csv are written beside it.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images or captions encoded per call (global).")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", "", "TFDS's data directory for tasks read from TFDS.")
_WEIGHTS = flags.DEFINE_string("weights", "", "Released weights to benchmark (imported into --workdir first).")
_WEIGHTS_FORMAT = flags.DEFINE_enum("weights_format", "open_clip", ["open_clip", "declip_official", "declip_jax"],
                                    "The weights' format, as declip_jax.interop.convert's --format.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "With --weights: the config of the model they fit.",
                                          lock_config=True)
_PROBE_LR = flags.DEFINE_float("linear_probe_lr", 0.1, "Linear probes: AdamW's peak learning rate.")
_PROBE_EPOCHS = flags.DEFINE_integer("linear_probe_epochs", 10, "Linear probes: epochs.")
_PROBE_BATCH_SIZE = flags.DEFINE_integer("linear_probe_batch_size", 64, "Linear probes: mini-batch size.")
_PROBE_SEED = flags.DEFINE_integer("linear_probe_seed", 0, "Linear probes: the seed of initialisation and orders.")
_PROBE_VAL_SPLIT = flags.DEFINE_string("linear_probe_val_split", "", "Linear probes: a split of the task's own "
                                       "(e.g. val) to choose the weight decay on; empty: none.")
_PROBE_VAL_PROPORTION = flags.DEFINE_float("linear_probe_val_proportion", 0.0, "Linear probes: else this share of "
                                           "the train split, drawn at random; 0 with no split: weight decay 0.")
flags.mark_flags_as_required(["workdir", "tasks"])


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  import jax  # pylint: disable=g-import-not-at-top  (--help stays fast)
  from etils import epath  # pylint: disable=g-import-not-at-top
  from declip_jax import loading  # pylint: disable=g-import-not-at-top
  from declip_jax.benchmark import linear_probe, suite, tables, tasks  # pylint: disable=g-import-not-at-top
  from declip_jax.evaluation import evaluations  # pylint: disable=g-import-not-at-top
  keys = tasks.parse(_TASKS.value)
  if not keys:
    print(f"error: --tasks={_TASKS.value!r} names no task.", file=sys.stderr)
    return 2
  try:
    probe = linear_probe.Settings(_PROBE_LR.value, _PROBE_EPOCHS.value, _PROBE_BATCH_SIZE.value, _PROBE_SEED.value,
                                  _PROBE_VAL_SPLIT.value, _PROBE_VAL_PROPORTION.value)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    if _WEIGHTS.value:
      if _CONFIG.value is None:
        print("error: --weights needs --config (the model's config, e.g. configs/clip_vit_b32.py).", file=sys.stderr)
        return 2
      from declip_jax.interop import convert  # pylint: disable=g-import-not-at-top
      convert.import_weights(_CONFIG.value, _WEIGHTS.value, _WORKDIR.value, _WEIGHTS_FORMAT.value)
    model = loading.load(_WORKDIR.value, _STEP.value, devices=jax.devices())
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  output = epath.Path(_OUTPUT.value or f"{_WORKDIR.value.rstrip('/')}/benchmark.jsonl")
  output.parent.mkdir(parents=True, exist_ok=True)
  config = suite.benchmark_config(model.config, _BATCH_SIZE.value, _TFDS_DATA_DIR.value)
  evals = evaluations.Evaluations(config, model.module, model.tokenizer, model.mesh)
  runner = suite.Suite(config, evals, model.variables, _DATA_ROOT.value, probe)
  writer = jax.process_index() == 0
  results = []
  for i, key in enumerate(keys, 1):
    task = suite.find_task(key, _DATA_ROOT.value)
    result = runner.run(task) if task is not None else suite.unknown_task(key, _DATA_ROOT.value)
    results.append(result)
    if writer:
      suite.write_lines(output, results)
      print(suite.progress_line(i, len(keys), task, result), flush=True)
  if writer:
    stem = str(output)[:-len(".jsonl")] if str(output).endswith(".jsonl") else str(output)
    header = f"Step {model.step} of {_WORKDIR.value}; data: {_DATA_ROOT.value or 'TFDS'}."
    epath.Path(stem + ".md").write_text(tables.markdown(results, header))
    epath.Path(stem + ".csv").write_text(tables.csv_text(results))
    failed = [r.key for r in results if r.error is not None]
    print(f"wrote {output} ({len(results)} tasks{f', {len(failed)} failed: ' + ', '.join(failed) if failed else ''})"
          f", {stem}.md, {stem}.csv")
  return 1 if any(r.error is not None for r in results) else 0


def run():
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
