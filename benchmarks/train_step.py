"""Times the jitted train step for a config and prints a table row per config.

  python benchmarks/train_step.py --config=configs/demo.py [--steps=20] [--compare] [--data=synthetic]
      [--config.train.batch_size=256]

Columns: compile time (first call), median steady-state step time over --steps calls on one real batch,
images/s, model FLOPs per step counted analytically (declip_jax/aot/flops.py: forward matmuls x 3), the compiled
executable's cost-analysis FLOPs (what XLA executes, recompute included), achieved model TFLOP/s, MFU against
the backend's peak (GPU/TPU: dense bf16 peak of the chip named by --peak; CPU: the measured float32 matmul rate
of this machine), peak device memory planned by XLA. --compare adds the CLIP baseline of the same model and
batch and prints the DeCLIP/CLIP time ratio next to the model-FLOP ratio. The input pipeline is not timed.

--data=pipeline times the step on one batch of the config's input pipeline (TensorFlow); --data=synthetic
(the default when TensorFlow is not installed) on a synthetic batch of the same shapes and masking rate
(declip_jax/synthetic.py), so that the numbers need no data and no TensorFlow.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from declip_jax import host_info  # noqa: E402
from declip_jax import presets, parallel, synthetic  # noqa: E402
from declip_jax.training import train_setup
from declip_jax.aot import flops  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps after compilation.")
_COMPARE = flags.DEFINE_bool("compare", False, "Also time the CLIP baseline of the same model and batch.")
_PEAK = flags.DEFINE_enum("peak", None, list(flops.PEAK_BF16_TFLOPS), "Accelerator whose bf16 peak MFU uses.")
_DATA = flags.DEFINE_enum("data", "pipeline" if host_info.has_tensorflow() else "synthetic",
                          ["pipeline", "synthetic"], "Where the timed batch comes from.")
_PROFILE_DIR = flags.DEFINE_string("profile_dir", None, "Write a jax.profiler trace of the timed steps here "
                                   "(first variant only); open it with TensorBoard's profile plugin or Perfetto.")


_PROFILED: list = []  # Set once the first variant was traced.


def first_batch(config, data: str):
  """(setup, one host batch) from the config's input pipeline or synthetic."""
  if data == "synthetic":
    setup = train_setup.Setup(config)
    return setup, synthetic.batch(config, setup.token_ids)
  from declip_jax.data import pipeline, tokenizers  # pylint: disable=g-import-not-at-top  (TensorFlow)
  setup = train_setup.Setup(config)
  return setup, next(pipeline.numpy_batches(pipeline.train_dataset(config, tokenizers.build(config))))


def time_config(config, data: str = "pipeline", steps: int = 20, profile_dir=None) -> dict:
  """Compiles and times the train step; returns compile_s, step_s (median), model/executed FLOPs, peak bytes,
  and the process's CPU time / wall time over the timed steps."""
  setup, batch = first_batch(config, data)
  batch = parallel.host_to_global(batch, setup.mesh)
  step = setup.jit_train_step(config)
  state = setup.init_state()
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  memory = compiled.memory_analysis()
  peak_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
                + memory.temp_size_in_bytes) if memory is not None else float("nan")
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  profile = profile_dir and not _PROFILED
  if profile:
    jax.profiler.start_trace(profile_dir)
    _PROFILED.append(True)
  cpu = host_info.CpuTimer()
  for i in range(steps):
    start = time.perf_counter()
    with jax.profiler.StepTraceAnnotation("train", step_num=i):
      state, metrics = compiled(state, batch)
      jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  if profile:
    jax.profiler.stop_trace()
  return {"compile_s": compile_s, "step_s": statistics.median(times), "model_flops": flops.train_step(config)["total"],
          "executed_flops": float(cost.get("flops", float("nan"))) * jax.device_count(), "peak_bytes": peak_bytes,
          "cpu_per_wall": cpu.ratio()}


def main(_):
  config = _CONFIG.value
  if jax.default_backend() == "cpu":
    peak, peak_name = host_info.matmul_tflops(2048, "float32"), "measured CPU f32 matmul"
  else:
    peak_name = _PEAK.value or ("H100 SXM" if jax.default_backend() == "gpu" else "TPU v5e")
    peak = flops.PEAK_BF16_TFLOPS[peak_name] * jax.device_count()
  rows = [("DeCLIP" if config.loss.weights.iss + config.loss.weights.tss + config.loss.weights.nns > 0 else "CLIP",
           config)]
  if _COMPARE.value:
    rows.append(("CLIP", presets.use_clip_baseline(config.copy_and_resolve_references())))
  b = config.train.batch_size
  print(f"host: {host_info.describe()}")
  print(f"peak for MFU: {peak:.2f} TFLOP/s ({peak_name}, {jax.device_count()} {jax.default_backend()} device(s)); "
        f"batch: {_DATA.value}")
  print("| config | variant | batch | dtype | compile s | median step ms | images/s | model GFLOP/step | executed "
        "GFLOP/step | model TFLOP/s | MFU | peak memory GiB | CPU/wall |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  results = {}
  for name, c in rows:
    r = results[name] = time_config(c, _DATA.value, _STEPS.value, _PROFILE_DIR.value)
    achieved = r["model_flops"] / r["step_s"] / 1e12
    print(f"| {flags.FLAGS['config'].config_filename} | {name} | {b} | {c.model.dtype} | {r['compile_s']:.1f} | "
          f"{r['step_s'] * 1e3:.1f} | {b / r['step_s']:.0f} | {r['model_flops'] / 1e9:.1f} | "
          f"{r['executed_flops'] / 1e9:.1f} | {achieved:.3f} | {achieved / peak:.1%} | "
          f"{r['peak_bytes'] / 2**30:.2f} | {r['cpu_per_wall']:.2f} |", flush=True)
  if _COMPARE.value:
    d, c = results["DeCLIP"], results["CLIP"]
    print(f"DeCLIP/CLIP: time {d['step_s'] / c['step_s']:.2f}x, "
          f"model FLOPs {d['model_flops'] / c['model_flops']:.2f}x, "
          f"executed FLOPs {d['executed_flops'] / c['executed_flops']:.2f}x")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
