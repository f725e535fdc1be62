"""The suite's tables: one row per task (its main metric, the CLIP_benchmark metrics, time, examples or error)
and DataComp's aggregates, as Markdown and CSV."""

import csv
import io
import math
import statistics
from typing import Any

from declip_jax.benchmark import suite, tasks

COLUMNS = ("acc1", "acc5", "mean_per_class_recall", "image_retrieval_recall@1", "text_retrieval_recall@1",
           "image_retrieval_recall@5", "text_retrieval_recall@5")


def _number(value: Any) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ""
  return f"{100 * value:.2f}"


def rows(results: list[suite.Result]) -> list[dict[str, str]]:
  """Table rows (percentages with 2 decimals): task, dataset, main metric, the metric columns, examples,
  seconds, error. A linear probe's lp_acc1, lp_acc5 and lp_mean_per_class_recall go in the acc1, acc5 and
  mean_per_class_recall columns (its dataset says "linear probe")."""
  out = []
  for r in results:
    row = {"task": r.key, "dataset": r.dataset, "main_metric": _number(r.metrics.get("main_metric"))}
    row.update({c: _number(r.metrics.get(c, r.metrics.get(f"lp_{c}"))) for c in COLUMNS})
    row.update({"examples": str(r.num_examples), "seconds": f"{r.seconds:.1f}", "error": r.error or ""})
    out.append(row)
  return out


def aggregate_rows(results: list[suite.Result]) -> list[dict[str, str]]:
  return [{"aggregate": name, "value": _number(a["value"]), "tasks": f"{a['tasks']} of {a['of']}"}
          for name, a in suite.aggregates(results).items()]


def markdown(results: list[suite.Result], header: str = "") -> str:
  def table(items: list[dict[str, str]]) -> list[str]:
    if not items:
      return []
    keys = list(items[0])
    return (["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            + ["| " + " | ".join(row[k].replace("|", "\\|") for k in keys) + " |" for row in items])
  lines = [header, ""] if header else []
  lines += table(rows(results)) + ["", "Aggregates (DataComp's: the mean main metric of the tasks that ran):", ""]
  return "\n".join(lines + table(aggregate_rows(results))) + "\n"


def csv_text(results: list[suite.Result]) -> str:
  buffer = io.StringIO()
  items = rows(results)
  writer = csv.DictWriter(buffer, fieldnames=list(items[0]) if items else ["task"])
  writer.writeheader()
  writer.writerows(items)
  buffer.write("\n")
  aggregate = csv.DictWriter(buffer, fieldnames=["aggregate", "value", "tasks"])
  aggregate.writeheader()
  aggregate.writerows(aggregate_rows(results))
  return buffer.getvalue()


def task_table() -> str:
  """DataComp's tasks as docs/evaluation.md shows them (a test checks the page against this)."""
  lines = ["| task key | dataset | main metric | in the average | read from |", "|---|---|---|---|---|"]
  for t in tasks.DATACOMP:
    source = f"`{t.tfds}` or the tars" if t.tfds else "the tars"
    metric = t.main_metric + (" (not computed yet)" if t.main_metric in tasks.NEEDS_METADATA else "")
    lines.append(f"| `{t.key}` | {t.name} | {metric} | {'yes' if t.in_average else 'no'} | {source} |")
  return "\n".join(lines) + "\n"


def clip_benchmark_comparison(record: dict) -> str:
  """The record of benchmarks/vs_clip_benchmark.py as Markdown: each metric from both commands, their wall times
  and images/s (medians over the rounds), and how far the two preprocessings are apart on the same images."""
  ours, theirs = record["metrics"]["ours"], record["metrics"]["clip_benchmark"]
  lines = [f"Host: {record['host']}. Model: {record['model']['image']} "
           f"({record['model']['image_size']} px), open_clip's random initialisation; "
           f"{record['num_images']:,} images per task at {record['source_size']} px, batch {record['batch_size']}, "
           f"float32; {len(record['seconds']['ours_per_task'])} rounds, alternating.", "",
           "| | declip_jax | CLIP_benchmark |", "|---|---|---|"]
  for task in theirs:
    for name, value in theirs[task].items():
      lines.append(f"| {task} {name} | {_number(ours[task][name])} | {_number(value)} |")
  median = {k: statistics.median(v) for k, v in record["seconds"].items()}
  speed = record["images_per_second"]
  lines.append(f"| both tasks, a process each: seconds (images/s) | {median['ours_per_task']:.1f} "
               f"({speed['ours_per_task']:.1f}) | {median['clip_benchmark_per_task']:.1f} "
               f"({speed['clip_benchmark_per_task']:.1f}) |")
  lines.append(f"| both tasks in one process: seconds (images/s) | {median['ours_one_process']:.1f} "
               f"({speed['ours_one_process']:.1f}) | (one task kind per command) |")
  for shape, d in record["preprocessing"].items():
    lines.append(f"| preprocessing, {shape} {d['source'][0]}x{d['source'][1]} images: max / mean abs. difference "
                 f"(of 255), share of values over 1 | {d['max']:.2f} / {d['mean']:.3f}, {100 * d['share_over_1']:.2f}% "
                 f"| (the reference) |")
  return "\n".join(lines) + "\n"


def seed_spread(record: dict, metric: str) -> float:
  """The larger of the two sides' ranges (max - min over the seeds) of a linear-probe metric in the record of
  benchmarks/linear_probe_seeds.py: how far apart two seeds of one probe came."""
  return max(max(r[metric] for r in runs) - min(r[metric] for r in runs)
             for runs in (record["ours"], record["clip_benchmark"]))


def linear_probe_seeds(record: dict) -> str:
  """The record of benchmarks/linear_probe_seeds.py as Markdown: each linear-probe metric's range and mean over the
  seeds on each side, and the tolerance it sets (`seed_spread`)."""
  s = record["settings"]
  lines = [f"Host: {record['host']}. Task: `{record['task']}` ({record['train_images']} training, "
           f"{record['test_images']} test images), lr {s['lr']}, {s['epochs']} epochs, batch {s['batch_size']}, "
           f"weight decay {s['weight_decay']}; seeds {record['seeds'][0]}-{record['seeds'][-1]} on each side.", "",
           "| metric | declip_jax: min - max (mean) | CLIP_benchmark: min - max (mean) | tolerance |",
           "|---|---|---|---|"]
  for metric in record["ours"][0]:
    cells = []
    for runs in (record["ours"], record["clip_benchmark"]):
      values = [r[metric] for r in runs]
      cells.append(f"{_number(min(values))} - {_number(max(values))} ({_number(statistics.mean(values))})")
    lines.append(f"| {metric} | {cells[0]} | {cells[1]} | {_number(seed_spread(record, metric))} |")
  return "\n".join(lines) + "\n"
