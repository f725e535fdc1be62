"""The fit tables of docs/accelerators.md: which settings make each recipe's train step fit each TPU slice or GPU
host, compiled without the hardware (TPU: libtpu, `pip install "jax[tpu]==<the pinned jax>"`; GPU: XLA's GPU
compiler, `pip install -r requirements-gpu-aot.txt`).

  python benchmarks/fit_table.py --family=tpu [--out=tpu_fit.json] [--only=B/32]
  python benchmarks/fit_table.py --family=gpu [--out=docs/benchmarks/gpu_fit.json] [--only=B/32] [--gpus=h100,a100-40]
  python benchmarks/fit_table.py --family=gpu --only='^DeCLIP ViT-B/32 4096'   (the recipe's whole batch, GPU)
  python benchmarks/fit_table.py --family=gpu --out=docs/benchmarks/gpu_fit.json --table   (print, compile nothing)
  python benchmarks/fit_table.py --family=gpu --out=docs/benchmarks/gpu_fit.json --docs=docs/accelerators.md
      (the docs' table, benchmarks/fit_table_docs.py, into the page; compile nothing)

For every (config, global batch, slice or GPU host) case below, `declip_jax.aot.ladder.fit` walks its ladder (bf16,
remat, FSDP, smaller per-device batch; cheapest first) until the step fits the memory per device (TPU: libtpu's
HBM figure; GPU: what JAX allocates, `gpu_target.GpuTarget.usable_gib`), and prints one Markdown row: the
settings that fit, the planned peak, what the config as given needed and, for GPUs, the roofline estimate of
images/s per GPU (`ladder.roofline`). Results are also written to --out as they come, with the host line, the
JAX version and the commit (a long run keeps what it finished; a rerun skips the cases already there).
"""

import json
import os
import re
import sys
import time

if "--family=gpu" in sys.argv:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # XLA's GPU compiler without a GPU (before JAX is imported).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from declip_jax import host_info  # noqa: E402
from declip_jax.aot import gpu_target, ladder, targets  # noqa: E402
from declip_jax.study import run_records  # noqa: E402

from benchmarks import fit_table_docs  # noqa: E402

_FAMILY = flags.DEFINE_enum("family", "tpu", ["tpu", "gpu"], "TPU slices (libtpu) or GPU hosts (XLA's GPU "
                            "compiler).")
_OUT = flags.DEFINE_string("out", "", "JSON file the results are written to (default <family>_fit.json).")
_ONLY = flags.DEFINE_string("only", "", "Run only the cases where this regular expression matches '<model> "
                            "<global batch> <target>' (e.g. 'B/32', '^CLIP ViT-B/32 1024 gpu:h100:').")
_TABLE = flags.DEFINE_bool("table", False, "Print the table of every result in --out, compiling nothing.")
_GPUS = flags.DEFINE_list("gpus", fit_table_docs.GPUS, "GPU kinds (--family=gpu).")
_DOCS = flags.DEFINE_string("docs", "", "Render the family's table of --out into this page's <!-- <family>_fit --> "
                            "block (docs/accelerators.md), compiling nothing.")

# (model, config module, global batch, [(chip, topology), ...]): 32-device slices for the recipe's 4,096
# (128 per device, as the official 32 GPUs); 256 devices for 32,768.
SLICES_32 = [("v4", "2x2x4"), ("v5e", "4x8"), ("v5p", "2x4x4")]
SLICES_256 = [("v4", "4x4x8"), ("v5e", "16x16"), ("v5p", "4x8x8")]
TPU_CASES = [
    ("DeCLIP ViT-B/32", "declip_vit_b32", 4096, SLICES_32),
    ("DeCLIP ViT-B/32", "declip_vit_b32", 32768, SLICES_256),
    ("DeCLIP ViT-B/16", "declip_vit_b16", 4096, SLICES_32),
    ("DeCLIP ViT-L/14", "declip_vit_l14", 4096, SLICES_32),
    ("DeCLIP RN50", "declip_rn50", 4096, SLICES_32),
]
# One host of 8 GPUs at the recipe's 128 images per GPU (global batch 1,024).
GPU_MODELS = fit_table_docs.GPU_MODELS
GPUS_PER_HOST, PER_GPU = 8, 128
# The recipe's whole global batch on fewer GPUs: where it fits, and with what.
GPU_RECIPE_BATCH_CASES = [("DeCLIP ViT-B/32", "declip_vit_b32", 4096, "gpu:a100-40:8"),
                          ("DeCLIP ViT-B/32", "declip_vit_b32", 4096, "gpu:h100:1")]


def _load(module: str, batch: int):
  """The config at `batch`; a ResNet's BatchNorm groups (the recipe's 4,096: SyncBN over 32 GPUs) at most the
  batch (one host of 8 GPUs: all 1,024 images, the same memory per device)."""
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{module}").get_config()
  config.train.batch_size = batch
  config.model.image.bn_group_size = min(config.model.image.bn_group_size, batch)
  return config


def _short(overrides: dict) -> str:
  names = {"model.dtype": "bf16", "model.image.remat": "image remat", "model.text.remat": "text remat",
           "mesh.shape": "FSDP", "train.batch_size": "global batch"}
  parts = []
  for k, v in overrides.items():
    parts.append({"model.dtype": "bf16", "mesh.shape": "FSDP"}.get(k) or f"{names.get(k, k)} {v}")
  return ", ".join(parts) or "as configured (float32)"


def _cases() -> list[tuple[str, str, int, str]]:
  """(model, config module, global batch, target) of the chosen family."""
  if _FAMILY.value == "tpu":
    return [(model, module, batch, f"tpu:{chip}:{topology}") for model, module, batch, slices in TPU_CASES
            for chip, topology in slices]
  return [(model, module, GPUS_PER_HOST * PER_GPU, f"gpu:{gpu}:{GPUS_PER_HOST}") for model, module in GPU_MODELS
          for gpu in _GPUS.value] + GPU_RECIPE_BATCH_CASES


def _memory(target: str, devices) -> tuple[float, str]:
  """(GiB per device the program must fit in, its short name)."""
  if target.startswith("gpu:"):
    return gpu_target.load(target.split(":")[1]).usable_gib(), gpu_target.load(target.split(":")[1]).title
  return ladder.available_hbm_gib(devices[0]), f"{target.split(':')[1]} {target.split(':')[2]}"


def main(_):
  import jax  # pylint: disable=g-import-not-at-top
  out = _OUT.value or f"{_FAMILY.value}_fit.json"
  results = json.loads(open(out).read()) if os.path.exists(out) else []
  # Rows compiled before model.scan_unroll (the layers in a loop: 1) are redone when the configs no longer loop.
  done = {(r["model"], r["batch"], r["target"], r.get("jax"), r.get("scan_unroll", 1)) for r in results}
  host, commit = host_info.describe(), run_records.commit_of()
  if _DOCS.value:
    page = open(_DOCS.value).read()
    with open(_DOCS.value, "w") as f:
      f.write(fit_table_docs.rendered(page, results, _FAMILY.value))
    print(f"rendered {out} into {_DOCS.value}")
    return
  if not _TABLE.value:
    print(f"host: {host}; commit {commit}")
  print("| model | global batch | target (devices) | memory/device GiB | as configured needs GiB | cheapest settings "
        "that fit | planned peak GiB | roofline images/s per device (estimate) | compiles tried | s |")
  print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
  if _TABLE.value:
    for row in results:
      print(markdown_row(row, jax.__version__))
    return
  for model, module, batch, target in _cases():
    config = _load(module, batch)
    if (not re.search(_ONLY.value, f"{model} {batch} {target}")
        or (model, batch, target, jax.__version__, config.model.scan_unroll) in done):
      continue
    start = time.time()
    devices = (gpu_target.devices(*gpu_target.parse(target)) if target.startswith("gpu:")
               else targets.tpu_devices(target))
    available, name = _memory(target, devices)
    attempts = ladder.fit(config, devices, available)
    fitting = next((a for a in attempts if a.fits), None)
    estimate = None
    if fitting and target.startswith("gpu:"):
      estimate = ladder.roofline(ladder.apply_overrides(config, fitting.overrides), fitting.cost,
                              gpu_target.load(target.split(":")[1]), len(devices))
    first = attempts[0]
    row = {"model": model, "batch": batch, "target": target, "name": name, "devices": len(devices),
           "memory_gib": available, "as_configured_gib": first.needed_gib, "as_configured_what": first.what,
           "fits_with": fitting.overrides if fitting else None, "peak_gib": fitting.needed_gib if fitting else None,
           "roofline": estimate, "attempts": [{"label": a.label, "fits": a.fits, "needed_gib": a.needed_gib,
                                               "what": a.what, "error": a.error} for a in attempts],
           "seconds": time.time() - start, "jax": jax.__version__, "scan_unroll": config.model.scan_unroll,
           "host": host, "commit": commit}
    results = [r for r in results if (r["model"], r["batch"], r["target"], r.get("jax")) !=
               (model, batch, target, jax.__version__)] + [row]  # A redone row replaces the old one.
    with open(out, "w") as f:
      json.dump(results, f, indent=1)
    print(markdown_row(row, jax.__version__), flush=True)


def markdown_row(row: dict, jax_version: str) -> str:
  """One row of the printed table from a result of --out. "(loop)" marks rows compiled before model.scan_unroll,
  with the layers in a loop (as ViT-L/14's config still has them), "(jax X)" rows of another JAX version, and an
  accumulating step's roofline is its towers' bytes of one micro-batch (XLA counts a loop's body once)."""
  need = row["as_configured_gib"]
  need = f"{need:.1f}" + ("" if row["as_configured_what"] == "planned peak" else "+") if need else "?"
  roof = row["roofline"]
  one_micro_batch = (row["fits_with"] or {}).get("train.accum_steps", 1) > 1
  roof = (f"{roof['images_per_s']:,.0f} ({roof['bound']}{'; bytes of one micro-batch' if one_micro_batch else ''})"
          if roof else "-")
  fits = (f"{_short(row['fits_with'])} | {row['peak_gib']:.1f}" if row["fits_with"] is not None
          else "none of the ladder | -")
  loop = (" (loop)" if "scan_unroll" not in row else "") + (f" (jax {row['jax']})" if row["jax"] != jax_version else "")
  return (f"| {row['model']}{loop} | {row['batch']:,} | {row['name']} ({row['devices']}) | {row['memory_gib']:.2f} | "
          f"{need} | {fits} | {roof} | {len(row['attempts'])} | {row['seconds']:.0f} |")


if __name__ == "__main__":
  app.run(main)
