"""The GPU fit table of docs/accelerators.md, rendered from `docs/benchmarks/gpu_fit.json` (what
`benchmarks/fit_table.py --family=gpu` records): one row per (model, global batch, GPU host) case at the newest JAX
version in the file, its last result. No flags and no JAX here, so that tests import it.

  python benchmarks/fit_table.py --family=gpu --out=docs/benchmarks/gpu_fit.json --docs=docs/accelerators.md
"""

import re

# The GPU table's models (one host of 8 GPUs at the recipe's 128 per GPU) and GPU kinds, in the docs' order.
GPU_MODELS = [("DeCLIP ViT-B/32", "declip_vit_b32"), ("CLIP ViT-B/32", "clip_vit_b32"),
              ("DeCLIP ViT-B/16", "declip_vit_b16"), ("DeCLIP ViT-L/14", "declip_vit_l14"),
              ("DeCLIP RN50", "declip_rn50"), ("CLIP RN50", "clip_rn50"), ("SLIP ViT-B/32", "slip_vit_b32"),
              ("FILIP ViT-B/32", "filip_vit_b32"), ("DeFILIP ViT-B/32", "defilip_vit_b32"),
              ("SigLIP ViT-B/32", "siglip_vit_b32"), ("DeSigLIP ViT-B/32", "desiglip_vit_b32"),
              ("SLIP RN50", "slip_rn50"), ("FILIP RN50", "filip_rn50")]
GPUS = ["h100", "h200", "a100-40", "a100-80"]
GPU_LABELS = {"h100": "H100 80GB", "h200": "H200", "a100-40": "A100 40GB", "a100-80": "A100 80GB",
              "h100-pcie": "H100 PCIe", "a100-80-pcie": "A100 80GB PCIe", "b200": "B200"}
HEADER = ("| model | GPU (JAX allocates GiB) | as configured, GiB | cheapest settings that fit | planned peak GiB | "
          "roofline images/s per GPU (estimate; bound) |\n|---|---|---:|---|---:|---:|")
TPU_HEADER = ("| model | global batch | slice (devices) | HBM per device GiB | as configured needs GiB | cheapest settings "
              "that fit | planned peak GiB | compiles |\n|---|---:|---|---:|---:|---|---:|---:|")


def _block(family: str) -> re.Pattern:
  return re.compile(rf"(<!-- {family}_fit:[^\n]*-->\n)(.*?)(<!-- /{family}_fit -->)", re.S)


def _version_key(version: str) -> tuple:
  return tuple(int(p) for p in re.findall(r"\d+", version))


def settings(overrides: dict) -> str:
  """The ladder's overrides in words: "bf16, remat save_dots, accumulation over 4"."""
  if not overrides:
    return "as configured (float32)"
  words = []
  if overrides.get("model.dtype") == "bfloat16":
    words.append("bf16")
  if "model.image.remat" in overrides or "model.text.remat" in overrides:
    words.append(f"remat {overrides.get('model.image.remat') or overrides.get('model.text.remat')}")
  if overrides.get("train.accum_steps", 1) > 1:
    words.append(f"accumulation over {overrides['train.accum_steps']}")
  if "mesh.shape" in overrides:
    words.append("FSDP")
  if "train.batch_size" in overrides:
    words.append(f"global batch {overrides['train.batch_size']:,}")
  return ", ".join(words)


def row_markdown(row: dict, per_host_batch: int) -> str:
  """One row of the docs' table."""
  _, gpu, count = row["target"].split(":")
  label = f"{GPU_LABELS.get(gpu, gpu)} ({row['memory_gib']:.1f})"
  if row["batch"] != per_host_batch * row["devices"] // 8 or row["devices"] != 8:
    label += f", {row['devices']} GPU{'s' if row['devices'] > 1 else ''}, batch {row['batch']:,}"
  roof = row["roofline"]
  accumulating = (row["fits_with"] or {}).get("train.accum_steps", 1) > 1
  roof = (f"{roof['images_per_s']:,.0f} ({roof['bound']}{'; bytes of one micro-batch' if accumulating else ''})"
          if roof else "-")
  if row["fits_with"] is None:
    return f"| {row['model']} | {label} | {row['as_configured_gib']:.1f} | none of the ladder | - | - |"
  return (f"| {row['model']} | {label} | {row['as_configured_gib']:.1f} | {settings(row['fits_with'])} | "
          f"{row['peak_gib']:.1f} | {roof} |")


def table(rows: list[dict], models: list[str] = tuple(m for m, _ in GPU_MODELS), gpus: list[str] = tuple(GPUS),
          per_host_batch: int = 1024) -> str:
  """The table: for each model (in `models`' order) its one-host rows (in `gpus`' order), then its other cases
  (the recipe's whole batch on fewer GPUs), each the last result at the newest JAX version in `rows`."""
  latest = {(r["model"], r["batch"], r["target"]): r for r in _latest(rows)}
  lines = [HEADER]
  for model in models:
    cases = [k for k in latest if k[0] == model]
    host = sorted((k for k in cases if k[1] == per_host_batch and k[2].endswith(":8")),
                  key=lambda k: gpus.index(k[2].split(":")[1]) if k[2].split(":")[1] in gpus else len(gpus))
    others = [k for k in cases if k not in host]
    lines += [row_markdown(latest[k], per_host_batch) for k in host + others]
  return "\n".join(lines) + "\n"


def _latest(rows: list[dict]) -> list[dict]:
  """The last result of each (model, batch, target) case at the newest JAX version in `rows`, in first-run order."""
  newest = max((r["jax"] for r in rows), key=_version_key)
  latest = {}
  for r in rows:
    if r["jax"] == newest:
      latest[(r["model"], r["batch"], r["target"])] = r
  return list(latest.values())


def tpu_table(rows: list[dict]) -> str:
  """The TPU fit table: one row per case, as `benchmarks/fit_table.py --family=tpu` ran them."""
  lines = [TPU_HEADER]
  for r in _latest(rows):
    need = r["as_configured_gib"]
    need = (f"{need:.1f}" + ("" if r["as_configured_what"] == "planned peak" else "+")) if need else "?"
    fits = (f"{settings(r['fits_with'])} | {r['peak_gib']:.1f}" if r["fits_with"] is not None
            else "none of the ladder | -")
    slice_ = r["target"].split(":", 1)[1].replace(":", " ")
    lines.append(f"| {r['model']} | {r['batch']:,} | {slice_} ({r['devices']}) | {r['memory_gib']:.2f} | {need} | "
                 f"{fits} | {len(r['attempts'])} |")
  return "\n".join(lines) + "\n"


def rendered(page_text: str, rows: list[dict], family: str = "gpu") -> str:
  """`page_text` with its `<!-- <family>_fit: ... -->` block holding the family's table."""
  block = _block(family)
  if not block.search(page_text):
    raise ValueError(f"the page has no <!-- {family}_fit: ... --> ... <!-- /{family}_fit --> block.")
  text = table(rows) if family == "gpu" else tpu_table(rows)
  return block.sub(lambda m: m.group(1) + text + m.group(3), page_text, count=1)
