"""What each way of making the step cheaper saves, on this machine: DeCLIP and CLIP ViT-B/32 train steps with
FLIP's patch masking (0.5, 0.75), a lower resolution, and exact gradient accumulation, timed in one alternating
run against the plain step.

  python benchmarks/cheaper_step.py [--batch=16] [--rounds=5] [--models=declip,clip]
  python benchmarks/cheaper_step.py --models=clip,siglip,declip,desiglip --variants=plain   (softmax vs sigmoid)

The recipe's configs (configs/declip_vit_b32.py, configs/clip_vit_b32.py) at a small batch (default 16: CPU);
BatchNorm groups and NN queue groups shrink to fit it. Synthetic batches (no data, no TensorFlow). All variants
of a model are compiled first; then each round times one step of every variant in turn, so that a slow spell of
the host hits all of them alike; a variant's time is its median over the rounds. Variants with the same parameter
shapes (all but the lower resolution) chain one train state. The table gives times as ratios to the plain step,
next to the model FLOPs (and those executed: accumulation runs the towers' forward twice) of aot/flops.py.
Lower resolution here is 128 px (ViT-B/32 needs a multiple of 32; 4 x 4 patches against 7 x 7): the step's
cost at that size, not a training recipe (CLIPA's low-resolution pretraining also needs its fine-tuning stage).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from declip_jax import host_info, parallel, synthetic  # noqa: E402
from declip_jax.aot import flops  # noqa: E402
from declip_jax.training import train_setup  # noqa: E402

VARIANTS = (("plain (224 px, no mask, no accumulation)", {}),
            ("patch mask 0.5", {"model.image.mask_ratio": 0.5}),
            ("patch mask 0.75", {"model.image.mask_ratio": 0.75}),
            ("128 px", {"model.image.image_size": 128}),
            ("accumulation over 4 micro-batches", {"train.accum_steps": 4}))


def model_config(name: str, batch: int):
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{name}_vit_b32").get_config()
  config.data.source, config.data.tokenizer, config.data.vocab_path = "builtin", "word", ""  # As the AOT check.
  config.train.batch_size = batch
  config.ssl.bn_group_size = min(config.ssl.bn_group_size, batch)
  config.nns.groups = 1
  return config


def with_overrides(config, overrides: dict):
  config = config.copy_and_resolve_references()
  for path, value in overrides.items():
    node = config
    *parents, leaf = path.split(".")
    for key in parents:
      node = node[key]
    node[leaf] = value
  return config


def measure(name: str, batch: int, rounds: int, chosen: tuple) -> list[dict]:
  base = model_config(name, batch)
  variants, states = [], {}
  for label, overrides in [v for v in VARIANTS if not chosen or v[0].split(" (")[0] in chosen]:
    config = with_overrides(base, overrides)
    setup = train_setup.Setup(config)
    size = config.model.image.image_size
    if size not in states:
      states[size] = setup.init_state()
    batch_ = parallel.host_to_global(synthetic.batch(config, setup.token_ids), setup.mesh)
    start = time.perf_counter()
    step = setup.jit_train_step(config).lower(states[size], batch_).compile()
    compile_s = time.perf_counter() - start
    states[size], metrics = step(states[size], batch_)  # Warm-up.
    jax.block_until_ready(metrics)
    counted = flops.train_step(config)
    variants.append({"label": label, "size": size, "step": step, "batch": batch_, "compile_s": compile_s,
                     "times": [], "model_gflop": counted["total"] / 1e9, "executed_gflop": counted["executed"] / 1e9})
    print(f"  compiled {name} / {label} in {compile_s:.0f} s", file=sys.stderr, flush=True)
  for _ in range(rounds):
    for v in variants:
      start = time.perf_counter()
      states[v["size"]], metrics = v["step"](states[v["size"]], v["batch"])
      jax.block_until_ready(metrics)
      v["times"].append(time.perf_counter() - start)
  for v in variants:
    v["step_s"] = statistics.median(v["times"])
    del v["step"], v["batch"]
  return variants


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--models", default="declip,clip", help="configs/<name>_vit_b32.py, comma-separated")
  parser.add_argument("--variants", default="", help="comma-separated variant names (e.g. plain); default all")
  args = parser.parse_args()
  started = time.time()
  chosen = tuple(v for v in args.variants.split(",") if v)
  results = {name: measure(name, args.batch, args.rounds, chosen) for name in args.models.split(",")}
  print(f"host: {host_info.describe()}; batch {args.batch}, {args.rounds} alternating rounds, "
        f"{time.time() - started:.0f} s in all")
  print("| model | variant | median step s | time / plain | model GFLOP / plain | executed GFLOP / plain | "
        "compile s |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for name, variants in results.items():
    plain = variants[0]
    for v in variants:
      print(f"| {name} ViT-B/32 | {v['label']} | {v['step_s']:.2f} | {v['step_s'] / plain['step_s']:.2f} | "
            f"{v['model_gflop'] / plain['model_gflop']:.2f} | {v['executed_gflop'] / plain['executed_gflop']:.2f} | "
            f"{v['compile_s']:.0f} |")
  if len(results) > 1 and chosen == ("plain",):
    first = next(iter(results.values()))[0]
    for name, variants in results.items():
      print(f"{name} / {next(iter(results))}: time {variants[0]['step_s'] / first['step_s']:.2f}x, model FLOPs "
            f"{variants[0]['model_gflop'] / first['model_gflop']:.2f}x")
  if "declip" in results and "clip" in results and not chosen:
    c = results["clip"][0]
    for v in results["declip"]:
      print(f"DeCLIP {v['label']} / plain CLIP: time {v['step_s'] / c['step_s']:.2f}x, model FLOPs "
            f"{v['model_gflop'] / c['model_gflop']:.2f}x")


if __name__ == "__main__":
  main()
