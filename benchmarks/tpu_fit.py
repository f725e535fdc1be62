"""The README's TPU table: which settings make each recipe's train step fit each TPU slice (libtpu compiles,
no TPU needed; `pip install "jax[tpu]==<the pinned jax>"` first).

  python benchmarks/tpu_fit.py [--out=tpu_fit.json] [--only=B/32]

For every (config, global batch, slice) case below, `declip_jax.aot.fit` walks its ladder (bf16, remat,
FSDP, smaller per-device batch; cheapest first) until the step fits the HBM libtpu reports per device, and
prints one Markdown row: the settings that fit, the planned peak, and what the config as given needed. Results
are also written to --out as they come (a long run keeps what it finished).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from declip_jax import aot  # noqa: E402

_OUT = flags.DEFINE_string("out", "tpu_fit.json", "JSON file the results are written to.")
_ONLY = flags.DEFINE_string("only", "", "Run only the cases whose model name contains this.")

# (model, config module, global batch, [(chip, topology), ...]): 32-device slices for the recipe's 4,096
# (128 per device, as the official 32 GPUs); 256 devices for 32,768.
SLICES_32 = [("v4", "2x2x4"), ("v5e", "4x8"), ("v5p", "2x4x4")]
SLICES_256 = [("v4", "4x4x8"), ("v5e", "16x16"), ("v5p", "4x8x8")]
CASES = [
    ("DeCLIP ViT-B/32", "declip_vit_b32", 4096, SLICES_32),
    ("DeCLIP ViT-B/32", "declip_vit_b32", 32768, SLICES_256),
    ("DeCLIP ViT-B/16", "declip_vit_b16", 4096, SLICES_32),
    ("DeCLIP ViT-L/14", "declip_vit_l14", 4096, SLICES_32),
    ("DeCLIP RN50", "declip_rn50", 4096, SLICES_32),
]


def _load(module: str, batch: int):
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{module}").get_config()
  config.train.batch_size = batch
  return config


def _short(overrides: dict) -> str:
  names = {"model.dtype": "bf16", "model.image.remat": "image remat", "model.text.remat": "text remat",
           "mesh.shape": "FSDP", "train.batch_size": "global batch"}
  parts = []
  for k, v in overrides.items():
    parts.append({"model.dtype": "bf16", "mesh.shape": "FSDP"}.get(k) or f"{names.get(k, k)} {v}")
  return ", ".join(parts) or "as configured (float32)"


def main(_):
  results = json.loads(open(_OUT.value).read()) if os.path.exists(_OUT.value) else []
  done = {(r["model"], r["batch"], r["slice"]) for r in results}
  print("| model | global batch | slice (devices) | HBM/device GiB | as configured needs GiB | cheapest settings "
        "that fit | planned peak GiB | compiles tried | s |")
  print("|---|---|---|---|---|---|---|---|---|", flush=True)
  for model, module, batch, slices in CASES:
    if _ONLY.value not in model:
      continue
    for chip, topology in slices:
      name = f"{chip} {topology}"
      if (model, batch, name) in done:
        continue
      start = time.time()
      devices = aot.tpu_devices(f"tpu:{chip}:{topology}")
      available = aot.available_hbm_gib(devices[0])
      attempts = aot.fit(_load(module, batch), devices, available)
      fitting = next((a for a in attempts if a.fits), None)
      first = attempts[0]
      row = {"model": model, "batch": batch, "slice": name, "devices": len(devices), "hbm_gib": available,
             "as_configured_gib": first.needed_gib, "as_configured_what": first.what,
             "fits_with": fitting.overrides if fitting else None, "peak_gib": fitting.needed_gib if fitting else None,
             "attempts": [{"label": a.label, "fits": a.fits, "needed_gib": a.needed_gib, "what": a.what}
                          for a in attempts], "seconds": time.time() - start}
      results.append(row)
      with open(_OUT.value, "w") as f:
        json.dump(results, f, indent=1)
      need = f"{first.needed_gib:.1f}" + ("" if first.what == "planned peak" else "+") if first.needed_gib else "?"
      print(f"| {model} | {batch:,} | {name} ({len(devices)}) | {available:.2f} | {need} | "
            f"{_short(fitting.overrides) if fitting else 'none of the ladder'} | "
            f"{fitting.needed_gib:.1f} | {len(attempts)} | {row['seconds']:.0f} |" if fitting else
            f"| {model} | {batch:,} | {name} ({len(devices)}) | {available:.2f} | {need} | none of the ladder | - | "
            f"{len(attempts)} | {row['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
