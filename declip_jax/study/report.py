"""A study's report, rebuilt from its records: results.csv (every metric of every recorded run), results.md (mean
+- standard deviation over seeds) and results.png (metric against training pairs, or bars at one data size)."""

import csv
import re

import ml_collections
from etils import epath

from declip_jax.study import grid, run_records
from declip_jax.study.run_records import Records


def collect(study: ml_collections.ConfigDict, recorded: dict[str, dict], path: epath.Path) -> list[dict]:
  """One row per recorded run, in the grid's order: its axes, `<evaluation>/<metric>` for every evaluation
  metric, then the training scalars at the end of the run (`final_training_scalars`); written to `path` (CSV)."""
  rows = []
  for run in grid.runs_of(study):
    if run.name not in recorded:
      continue
    record = recorded[run.name]
    row = {"method": run.method, "num_train": run.num_train, "noise": run.noise, "seed": run.seed}
    for name, result in sorted(record["evaluations"].items()):
      row.update({f"{name}/{k}": v for k, v in sorted(result["metrics"].items())})
    row.update(sorted(record["training"].items()))
    rows.append(row)
  columns = list(dict.fromkeys(k for row in rows for k in row))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
  return rows


def summarize(rows: list[dict], metric: str) -> dict[tuple[str, str, int], tuple[float, float, float, int]]:
  """(method, noise, num_train) -> (mean, min, max, number of seeds) of a metric column."""
  return {k: (sum(v) / len(v), min(v), max(v), len(v)) for k, v in sorted(_per_cell(rows, metric).items())}


def _per_cell(rows: list[dict], metric: str) -> dict[tuple[str, str, int], list[float]]:
  """(method, noise, num_train) -> the metric column's values over seeds."""
  groups: dict[tuple[str, str, int], list[float]] = {}
  for row in rows:
    if metric in row:
      groups.setdefault((row["method"], row["noise"], row["num_train"]), []).append(float(row[metric]))
  return groups


def table(rows: list[dict], metrics: dict[str, str]) -> str:
  """A Markdown table: one row per (training pairs, method, noise) in the study's order, one column per
  (title -> metric column) with mean +- sample standard deviation over seeds (the value alone for one seed), in
  percent, and the seed count."""
  order = list(dict.fromkeys((row["num_train"], row["method"], row["noise"]) for row in rows))
  order.sort(key=lambda key: key[0])  # Stable: the methods keep the study's order within a size.
  lines = ["| pairs | method | noise | " + " | ".join(metrics) + " | seeds |",
           "|---:|---|---|" + "---:|" * len(metrics) + "---:|"]
  per_cell = {metric: _per_cell(rows, metric) for metric in metrics.values()}
  for num_train, method, noise in order:
    cells, seeds = [], 0
    for metric in metrics.values():
      values = per_cell[metric].get((method, noise, num_train), [])
      seeds = max(seeds, len(values))
      if not values:
        cells.append("")
        continue
      mean = sum(values) / len(values)
      if len(values) == 1:  # No spread to show.
        cells.append(f"{100 * mean:.1f}")
        continue
      std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
      cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}")
    lines.append(f"| {num_train:,} | {method} | {noise} | " + " | ".join(cells) + f" | {seeds} |")
  return "\n".join(lines) + "\n"


def _bar_plot(plt, rows: list[dict], metrics: dict[str, str], path: epath.Path) -> None:
  """A study at one data size (an ablation): one bar per (method, noise) in the study's order, mean over seeds,
  min-max whiskers, one panel per metric."""
  cells = list(dict.fromkeys((row["method"], row["noise"]) for row in rows))
  noises = {noise for _, noise in cells}
  labels = [method if len(noises) == 1 else f"{method} ({noise})" for method, noise in cells]
  figure, axes = plt.subplots(1, len(metrics), figsize=(max(5.5, 0.55 * len(cells)) * len(metrics) / 1.3, 4.5),
                              squeeze=False)
  for axis, (title, metric) in zip(axes[0], metrics.items()):
    summary = summarize(rows, metric)
    stats = [next(v for k, v in summary.items() if k[:2] == cell) for cell in cells]
    means = [s[0] for s in stats]
    axis.bar(range(len(cells)), means, yerr=[[m - s[1] for m, s in zip(means, stats)],
                                             [s[2] - m for m, s in zip(means, stats)]], capsize=3, color="tab:blue")
    axis.set_xticks(range(len(cells)), labels, rotation=60, ha="right", fontsize=8)
    axis.set_ylabel(metric)
    axis.set_title(f"{title} ({rows[0]['num_train']:,} pairs)")
    axis.grid(alpha=0.3, axis="y")
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def plot(rows: list[dict], metrics: dict[str, str], path: epath.Path) -> None:
  """One panel per (title -> metric column): mean over seeds against training pairs (log x), min-max band; a
  study at one data size gets bars per method instead."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  if len({row["num_train"] for row in rows}) == 1:
    _bar_plot(plt, rows, metrics, path)
    return
  figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
  for axis, (title, metric) in zip(axes[0], metrics.items()):
    summary = summarize(rows, metric)
    for method, noise in sorted({(m, n) for m, n, _ in summary}):
      points = sorted((k[2], v) for k, v in summary.items() if k[:2] == (method, noise))
      sizes = [p[0] for p in points]
      axis.plot(sizes, [p[1][0] for p in points], marker="o", label=f"{method} ({noise})")
      axis.fill_between(sizes, [p[1][1] for p in points], [p[1][2] for p in points], alpha=0.2)
    axis.set_xscale("log")
    axis.set_xlabel("training pairs")
    axis.set_ylabel(metric)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def host_kind(host: str) -> str:
  """The kind of machine of a record's host line, as "2-core AMD EPYC, AVX-512": its processor family, cores and
  widest vector instructions (what changes CPU numerics), without versions or provenance."""
  h = host.lower()
  family = ("AMD EPYC" if "epyc" in h else "Intel Xeon" if "xeon" in h else
            host.split(",")[0].split(";")[0].strip())
  cores = re.search(r"(\d+) (?:usable|amd epyc cores|cores|vcpus)", h)
  isa = "AVX-512" if ("avx512" in h or "avx-512" in h) else "AVX2 only" if "avx2" in h else "no AVX2"
  return f"{cores.group(1) + '-core ' if cores else ''}{family}, {isa}"


def paired_table(study: ml_collections.ConfigDict, recorded: dict[str, dict],
                 comparisons: list[tuple[str, str, str]], metrics: dict[str, str]) -> str:
  """A Markdown table of paired differences: for each (label, method, baseline method) comparison and each data
  size, the method's metric minus the baseline's on the same seed (the same data order and initialisation), mean
  +- sample standard deviation over the seeds where both are recorded, in points, the metrics joined by " / ".
  A cell whose two sides were recorded on different host kinds is marked "(hosts differ)", and the hosts are
  listed under the table: CPU numerics differ between instruction sets, so such a difference mixes the method's
  effect with the host's."""
  by_axes = {(r.method, r.num_train, r.noise, r.seed): recorded[r.name] for r in grid.runs_of(study)
             if r.name in recorded}
  sizes = list(dict.fromkeys(int(n) for n in study.num_train))
  lines = ["| pairs | " + " | ".join(label for label, _, _ in comparisons) + " |",
           "|---:|" + "---|" * len(comparisons)]
  mixed = {}
  for size in sizes:
    cells = []
    for label, method, baseline in comparisons:
      parts, hosts = [], set()
      for metric in metrics.values():
        evaluation, name = metric.split("/", 1)
        differences = []
        for (m, n, noise, seed), record in by_axes.items():
          base = by_axes.get((baseline, n, noise, seed))
          if m != method or n != size or base is None:
            continue
          differences.append(100 * (record["evaluations"][evaluation]["metrics"][name] -
                                    base["evaluations"][evaluation]["metrics"][name]))
          hosts |= {(method, host_kind(record["host"])), (baseline, host_kind(base["host"]))}
        if not differences:
          parts.append("-")
          continue
        mean = sum(differences) / len(differences)
        sd = (sum((d - mean) ** 2 for d in differences) / (len(differences) - 1)) ** 0.5 if len(differences) > 1 else 0
        parts.append(f"{mean:+.1f} ± {sd:.1f}")
      differ = len({h for _, h in hosts}) > 1
      if differ:
        for m, h in hosts:
          mixed.setdefault(m, set()).add(h)
      cells.append(" / ".join(parts) + (" (hosts differ)" if differ else ""))
    lines.append(f"| {size:,} | " + " | ".join(cells) + " |")
  text = "\n".join(lines) + "\n"
  if mixed:
    groups = {}
    for m in dict.fromkeys(m for m, _ in grid.pairs(study.methods)):  # The study's order.
      if m in mixed:
        groups.setdefault(" and ".join(sorted(mixed[m])), []).append(m)
    text += ("\n(hosts differ): the two sides of the cell were recorded on different kinds of host; " +
             "; ".join(f"{', '.join(ms)} on {kinds}" for kinds, ms in sorted(groups.items())) + ".\n")
  return text


def summary_table(rows: list[dict], names: dict[str, str], metrics: list[str], best_within: float = 1.0) -> str:
  """A Markdown table with one row per data size and one column per method (`names`: method -> column title),
  each cell the means over seeds of `metrics` in percent joined by " / ", in bold where within `best_within`
  points of the row's best for that metric."""
  sizes = list(dict.fromkeys(row["num_train"] for row in rows))
  lines = ["| training pairs | " + " | ".join(names.values()) + " |", "|---:|" + "---|" * len(names)]
  means = {metric: {k: 100 * v[0] for k, v in summarize(rows, metric).items()} for metric in metrics}
  for size in sorted(sizes):
    cells = []
    for method in names:
      parts = []
      for metric in metrics:
        row_values = [v for (m, _, n), v in means[metric].items() if n == size and m in names]
        value = next((v for (m, _, n), v in means[metric].items() if m == method and n == size), None)
        parts.append((f"{value:.1f}", value is not None and round(value, 1) >= round(max(row_values), 1) - best_within)
                     if value is not None else ("-", False))
      if all(bold for _, bold in parts):
        cells.append("**" + " / ".join(text for text, _ in parts) + "**")
      else:
        cells.append(" / ".join(f"**{text}**" if bold else text for text, bold in parts))
    lines.append(f"| {size:,} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


# Pages (beside the studies' folder, docs/) that show a study's table whole, between `<!-- study: NAME -->` and
# `<!-- /study -->`: rewritten with results.md, and checked against it by tests/test_study.py.
PAGES = ("results.md", "methods.md", "../README.md")


def study_block(name: str) -> re.Pattern:
  return re.compile(rf"(<!-- study: {re.escape(name)} -->\n)(.*?)(<!-- /study -->)", re.S)


def render_into(page_text: str, name: str, table_text: str) -> str:
  """`page_text` with every `<!-- study: name -->` block holding `table_text`."""
  return study_block(name).sub(lambda m: m.group(1) + table_text + m.group(3), page_text)


def write_results(records: Records, workdir: epath.Path, record_workdirs: bool = False) -> list[dict]:
  """Rebuilds the study's results.csv, results.md and results.png from its records (first recording complete
  workdirs without one when `record_workdirs`, as `plan`), and the pages' blocks that show its table; returns the
  CSV's rows."""
  recorded, _ = run_records.plan(records, workdir, say=lambda _: None, record_workdirs=record_workdirs)
  rows = collect(records.study, recorded, records.folder / "results.csv")
  panels = dict(grid.pairs(records.study.plot))
  if rows:
    plot(rows, panels, records.folder / "results.png")
  blocks = {records.name: table(rows, panels)}
  (records.folder / "results.md").write_text(blocks[records.name])
  if "paired" in records.study:
    blocks[f"{records.name}_paired"] = paired_table(records.study, recorded, list(records.study.paired), panels)
    (records.folder / "paired.md").write_text(blocks[f"{records.name}_paired"])
  if "summary" in records.study:
    blocks[f"{records.name}_summary"] = summary_table(rows, dict(grid.pairs(records.study.summary.names)),
                                                      list(records.study.summary.metrics))
    (records.folder / "summary.md").write_text(blocks[f"{records.name}_summary"])
  for page in (records.folder.parent.parent / p for p in PAGES):
    for name, text in blocks.items():
      if page.exists() and study_block(name).search(page.read_text()):
        page.write_text(render_into(page.read_text(), name, text))
  return rows
