"""What each way of making the step cheaper saves, on this machine: DeCLIP and CLIP ViT-B/32 train steps with
FLIP's patch masking (0.5, 0.75), a lower resolution, and exact gradient accumulation, timed in one alternating
run against the plain step.

  python benchmarks/cheaper_step.py [--batch=16] [--rounds=5] [--models=declip,clip]
  python benchmarks/cheaper_step.py --models=clip,siglip,declip,desiglip --variants=plain   (softmax vs sigmoid)
  JAX_PLATFORMS=cpu python benchmarks/cheaper_step.py --target=gpu:h100:8 [--per_device_batch=128]
      [--dtype=bfloat16]   (deviceless: requirements-gpu-aot.txt, no GPU)

The recipe's configs (configs/declip_vit_b32.py, configs/clip_vit_b32.py) at a small batch (default 16: CPU);
BatchNorm groups and NN queue groups shrink to fit it. Synthetic batches (no data, no TensorFlow). All variants
of a model are compiled first; then each round times one step of every variant in turn, so that a slow spell of
the host hits all of them alike; a variant's time is its median over the rounds. Variants with the same parameter
shapes (all but the lower resolution) chain one train state. The table gives times as ratios to the plain step,
next to the model FLOPs (and those executed: accumulation runs the towers' forward twice) of aot/flops.py.
Lower resolution here is 128 px (ViT-B/32 needs a multiple of 32; 4 x 4 patches against 7 x 7): the step's
cost at that size, not a training recipe (CLIPA's low-resolution pretraining also needs its fine-tuning stage).

With --target=gpu:<name>:<gpus> nothing runs: each variant's step is compiled by XLA's GPU compiler for that GPU
host at the recipe's batch per GPU (default 128: the official 4,096 over 32 GPUs; the configs' BatchNorm and NN
queue groups as given), and the table gives the planned peak memory per GPU and the roofline bound on images/s per
GPU (`declip_jax.aot.ladder.roofline`: the larger of the executed FLOPs over the matrix peak and XLA's bytes
accessed over the bandwidth). Estimates, not measurements: no kernel is autotuned or timed. XLA counts a loop's
body once, so accumulation's bound (its towers run in a loop over micro-batches) counts one micro-batch's bytes:
a looser bound that does not compare with the others (no ratio is printed for it).
"""

import argparse
import os
import statistics
import sys
import time

if any(a.startswith("--target=gpu:") for a in sys.argv):
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # XLA's GPU compiler without a GPU (before JAX is imported).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from declip_jax import host_info, parallel, synthetic  # noqa: E402
from declip_jax.aot import flops, gpu_target, ladder  # noqa: E402
from declip_jax.training import train_setup  # noqa: E402

VARIANTS = (("plain (224 px, no mask, no accumulation)", {}),
            ("patch mask 0.5", {"model.image.mask_ratio": 0.5}),
            ("patch mask 0.75", {"model.image.mask_ratio": 0.75}),
            ("128 px", {"model.image.image_size": 128}),
            ("accumulation over 4 micro-batches", {"train.accum_steps": 4}))


def model_config(name: str, batch: int, small: bool = True):
  """configs/<name>_vit_b32.py at global `batch`; `small`: its BatchNorm and NN queue groups shrunk to fit a CPU
  batch."""
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{name}_vit_b32").get_config()
  config.data.source, config.data.tokenizer, config.data.vocab_path = "builtin", "word", ""  # As the AOT check.
  config.train.batch_size = batch
  if small:
    config.ssl.bn_group_size = min(config.ssl.bn_group_size, batch)
    config.nns.groups = 1
  return config


def _chosen(chosen: tuple) -> list:
  return [v for v in VARIANTS if not chosen or v[0].split(" (")[0] in chosen]


def measure(name: str, batch: int, rounds: int, chosen: tuple) -> list[dict]:
  base = model_config(name, batch)
  variants, states = [], {}
  for label, overrides in _chosen(chosen):
    config = ladder.apply_overrides(base, overrides)
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


def compile_for_gpu(name: str, target: str, per_device_batch: int, dtype: str, chosen: tuple) -> list[dict]:
  """Each variant's step compiled for `target` (gpu:<name>:<gpus>): planned peak GiB and roofline per GPU."""
  gpu_name, hosts, gpus = gpu_target.parse(target)
  gpu, devices = gpu_target.load(gpu_name), gpu_target.devices(gpu_name, hosts, gpus)
  base = ladder.apply_overrides(model_config(name, per_device_batch * len(devices), small=False),
                                {"model.dtype": dtype})
  variants = []
  for label, overrides in _chosen(chosen):
    config = ladder.apply_overrides(base, overrides)
    start = time.perf_counter()
    attempt = ladder.try_compile(config, devices, label, overrides, gpu.usable_gib())
    counted = flops.train_step(config)
    variants.append({"label": label, "compile_s": time.perf_counter() - start, "peak_gib": attempt.needed_gib,
                     "fits": attempt.fits, "roofline": ladder.roofline(config, attempt.cost, gpu, len(devices)),
                     "model_gflop": counted["total"] / 1e9, "executed_gflop": counted["executed"] / 1e9})
    print(f"  compiled {name} / {label} in {variants[-1]['compile_s']:.0f} s", file=sys.stderr, flush=True)
  return variants


def print_gpu_table(results: dict, args) -> None:
  gpu_name, hosts, gpus = gpu_target.parse(args.target)
  gpu = gpu_target.load(gpu_name)
  print(f"host: {host_info.describe()}; deviceless compile for {hosts * gpus} x {gpu.title} (XLA's GPU compiler, "
        f"jax {jax.__version__}, no autotuning), {args.per_device_batch} per GPU, {args.dtype}; JAX allocates "
        f"{gpu.usable_gib():.2f} GiB per GPU. Estimates until a device measures them.")
  print("| model | variant | planned peak GiB per GPU | fits | bound | roofline images/s per GPU | "
        "images/s / plain | model GFLOP / plain | executed GFLOP / plain | compile s |")
  print("|---|---|---:|---|---|---:|---:|---:|---:|---:|")
  for name, variants in results.items():
    plain = variants[0]
    for v in variants:
      roof, base = v["roofline"] or {}, plain["roofline"] or {}
      speed, looped = roof.get("images_per_s"), roof.get("bytes_of_one_micro_batch")
      ratio = f"{speed / base['images_per_s']:.2f}" if speed and base.get("images_per_s") and not looped else "-"
      bound = roof.get("bound", "-") + (" (bytes of one micro-batch)" if looped else "")
      print(f"| {name} ViT-B/32 | {v['label']} | {v['peak_gib']:.1f} | {'yes' if v['fits'] else 'no'} | "
            f"{bound} | {f'{speed:,.0f}' if speed else '-'} | {ratio} | "
            f"{v['model_gflop'] / plain['model_gflop']:.2f} | {v['executed_gflop'] / plain['executed_gflop']:.2f} | "
            f"{v['compile_s']:.0f} |")
  if "declip" in results and "clip" in results:
    c = (results["clip"][0]["roofline"] or {}).get("images_per_s")
    for v in results["declip"]:
      speed = (v["roofline"] or {}).get("images_per_s")
      if c and speed and not v["roofline"].get("bytes_of_one_micro_batch"):
        print(f"DeCLIP {v['label']} / plain CLIP: roofline images/s {speed / c:.2f}x, model FLOPs "
              f"{v['model_gflop'] / results['clip'][0]['model_gflop']:.2f}x")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--models", default="declip,clip", help="configs/<name>_vit_b32.py, comma-separated")
  parser.add_argument("--variants", default="", help="comma-separated variant names (e.g. plain); default all")
  parser.add_argument("--target", default="", help="gpu:<name>:<gpus>: compile for that GPU host, run nothing")
  parser.add_argument("--per_device_batch", type=int, default=128, help="--target: examples per GPU")
  parser.add_argument("--dtype", default="bfloat16", help="--target: model.dtype (float32: TF32 matmuls)")
  args = parser.parse_args()
  started = time.time()
  chosen = tuple(v for v in args.variants.split(",") if v)
  if args.target:
    results = {name: compile_for_gpu(name, args.target, args.per_device_batch, args.dtype, chosen)
               for name in args.models.split(",")}
    print_gpu_table(results, args)
    print(f"{time.time() - started:.0f} s in all")
    return
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
