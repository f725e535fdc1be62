"""What a scanned transformer's loop costs the train step, from XLA's own compile (docs/performance.md): the step
compiled with the towers' blocks in a loop (`model.scan_unroll=1`), scanned without a loop
(`model.scan_unroll=0`) and unscanned (`model.scan_layers=False`), side by side.

  python benchmarks/scan_fill.py --config=configs/declip_vit_b32.py --target=gpu:h100:8 --per_device_batch=128 \
      [--set=model.dtype=bfloat16 ...] [--variants=loop,unrolled,unscanned] [--json_out=FILE]

Needs what `python -m declip_jax.aot` needs for the target (GPU: requirements-gpu-aot.txt). Columns, per device:
the compile's seconds (of the whole step, on this host, with whatever else it runs: a ratio, not a benchmark),
the planned peak (arguments + outputs - donated + temporaries) and the temporaries alone, the bytes of buffers
the program fills with a constant before use (parameterless fusions that broadcast a constant: a scan's stacked
outputs start as zeros, since the loop cannot be proven to overwrite them), XLA's bytes accessed (a loop's body
counted once, so only the loop-free rows compare with each other), and the compiled program's while loops.
"""

import argparse
import ast
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from declip_jax.aot import ladder, targets  # noqa: E402
from declip_jax.study import run_records  # noqa: E402

_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
          "s8": 1, "u8": 1, "pred": 1}


def _shape_bytes(text: str) -> int:
  """Bytes of every array shape in an HLO type: "(f32[12,256]{1,0}, s32[4])" -> 12*256*4 + 4*4."""
  total = 0
  for dtype, dims in re.findall(r"\b(\w+)\[([\d,]*)\]", text):
    if dtype in _BYTES:
      size = _BYTES[dtype]
      for d in filter(None, dims.split(",")):
        size *= int(d)
      total += size
  return total


def constant_fill_bytes(hlo: str) -> int:
  """Bytes written by the program's parameterless fusions whose computation broadcasts a constant (XLA's
  optimized HLO text): the buffers it fills before anything is computed into them."""
  filling = set()
  for name, body in re.findall(r"\n%([\w.\-]+) \(\) -> .*? \{\n(.*?)\n\}", hlo, re.S):
    if re.search(r"= \w+\[\] constant\(", body) and " broadcast(" in body:
      filling.add(name)
  total = 0
  for out_type, called in re.findall(r"= (.*?) fusion\(\), kind=\w+, calls=%([\w.\-]+)", hlo):
    if called in filling:
      total += _shape_bytes(out_type)
  return total


VARIANTS = {"loop": {"model.scan_layers": True, "model.scan_unroll": 1},
            "unrolled": {"model.scan_layers": True, "model.scan_unroll": 0},
            "unscanned": {"model.scan_layers": False, "model.scan_unroll": 1}}


def measure(config, devices, overrides: dict) -> dict:
  config = ladder.apply_overrides(config, overrides)
  start = time.perf_counter()
  compiled = ladder.compile_train_step(config, devices)
  seconds = time.perf_counter() - start
  memory, cost, hlo = ladder.memory_report(compiled), ladder.compiled_cost(compiled) or {}, compiled.as_text()
  return {"compile_s": seconds, "peak_gib": ladder.peak_gib(memory), "temporaries_gib": memory["temporaries"],
          "constant_fill_gb": constant_fill_bytes(hlo) / 1e9, "bytes_accessed_gb": cost.get("bytes accessed", 0) / 1e9,
          "while_loops": len(re.findall(r" while\(", hlo))}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True)
  parser.add_argument("--target", default="gpu:h100:8")
  parser.add_argument("--per_device_batch", type=int, default=128)
  parser.add_argument("--devices", type=int, default=1, help="--target=cpu: fake CPU devices (XLA_FLAGS)")
  parser.add_argument("--set", action="append", default=[], help="key=value config override (Python literal)")
  parser.add_argument("--variants", default="loop,unrolled,unscanned")
  parser.add_argument("--json_out", default="")
  args = parser.parse_args()
  config = run_records.load_config(args.config)
  for item in args.set:
    key, value = item.split("=", 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # A string, e.g. bfloat16.
    config = ladder.apply_overrides(config, {key: value})
  devices, described = targets.devices(args.target, args.devices)  # pylint: disable=protected-access
  config.train.batch_size = args.per_device_batch * len(devices)
  print(f"{args.config} {' '.join(args.set)} at {args.per_device_batch} per device on {described}")
  print("| blocks | compile s | planned peak GiB | temporaries GiB | constant fills GB | bytes accessed GB "
        "(XLA) | while loops |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  rows = {}
  for name in args.variants.split(","):
    overrides = VARIANTS[name]
    r = rows[name] = {**measure(config, devices, overrides), "overrides": overrides}
    print(f"| {name} | {r['compile_s']:.0f} | {r['peak_gib']:.1f} | {r['temporaries_gib']:.1f} | "
          f"{r['constant_fill_gb']:.1f} | {r['bytes_accessed_gb']:.1f} | {r['while_loops']} |", flush=True)
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump({"config": args.config, "set": args.set, "target": args.target, "described": described,
                 "per_device_batch": args.per_device_batch, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
