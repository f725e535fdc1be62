"""The prepared accelerator check (run it through benchmarks/device_check.sh): environment, correctness against the
CPU backend of the same process, and the recipe's step speed in bf16. Needs only jax, flax, optax,
orbax-checkpoint, ml_collections, absl, etils and numpy: no TensorFlow, no data (synthetic batches).

  python3 benchmarks/device_check.py --out=OUTDIR [--dry_run] [--budget_s=360]

Writes OUTDIR/device_check.json (after every section, so a cut run keeps what it finished) and
OUTDIR/device_check.md.

- Correctness: the tiny config (tests/tiny_config.py), the same initial state and 3 synthetic batches, run in
  float32 with matmul precision "highest" on the accelerator and on the CPU: every loss term of every step and
  the parameters after 3 steps must agree within 1e-4 (|a - b| / max(|b|, 1) for losses; per tensor
  max|a - b| / max|b| for parameters). A bf16-compute run of the same steps must be finite with the CLIP+MVS,
  ISS and TSS terms within 2% of float32 (|a - b| / max(|b|, 1): the ISS term lies in [-1, 1]). The NNS term
  (and so the total) is reported, not bounded: its positive is an argmax over the queue, and bf16 rounding of
  the embeddings flips near-ties among the random initial queue's entries (measured on the CPU: 7% in step 1).
- Speed: DeCLIP ViT-B/32, CLIP ViT-B/32 and DeCLIP ViT-B/16 at 224 px, bf16 compute, one device: one NN buffer of
  the official per-GPU 65,536 slots and SimSiam BatchNorm over the official 128-image groups. Per-device batches
  from 1,024 down; at each, the rematerialisation settings cheapest first (none, save_dots, full); the first
  that compiles within the device's memory and runs is timed. Reported: step time, images/s, model TFLOP/s
  (declip_jax/aot/flops.py), MFU against the chip's dense bf16 peak and against a bf16 matmul measured here. The B/32
  DeCLIP step is also timed with each `jax.nn.dot_product_attention` implementation (xla, cudnn).
- Compile memory, first: the DeCLIP ViT-B/32 step at the recipe's 128 per GPU (bf16, one device, the speed rows'
  settings) compiled by XLA's GPU compiler without the GPU (`declip_jax.aot`'s deviceless compile, for the
  description of this GPU, in a process with JAX_PLATFORMS=cpu: no kernel autotuning) and on the GPU (autotuned);
  both planned peaks and compile times, so a run on a GPU says how far the deviceless fit tables are from the
  device. Needs the CUDA plugin and ptxas (a GPU install has them); where they are missing it says so.
- --dry_run: every line on the CPU with tiny shapes, in seconds (CI runs it; the deviceless compile is for an
  H100 when XLA's GPU compiler is installed).
"""

import contextlib
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import traceback

if any(a.startswith("--deviceless_json=") for a in sys.argv):
  os.environ["JAX_PLATFORMS"] = "cpu"  # This process only compiles for the GPU's description (before JAX starts).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from declip_jax import host_info  # noqa: E402
from declip_jax import parallel, synthetic  # noqa: E402
from declip_jax.training import train_setup
from declip_jax.aot import flops, gpu_target, ladder  # noqa: E402
from tests.tiny_config import tiny_config  # noqa: E402

_OUT = flags.DEFINE_string("out", None, "Folder for device_check.json and device_check.md.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Everything on the CPU with tiny shapes.")
_BUDGET_S = flags.DEFINE_float("budget_s", 360.0, "Start no speed attempt this many seconds after the speed section "
                                "began (the two attention rows get until budget + 60 s), so the check ends within 8 "
                                "minutes on an H100/H200. Not applied to a dry run.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per speed row (dry run: 2).")
_DEVICELESS_JSON = flags.DEFINE_string("deviceless_json", "", "Internal: only compile the compile-memory config for "
                                       "--deviceless_target without a GPU and write the result here.")
_DEVICELESS_TARGET = flags.DEFINE_string("deviceless_target", "", "Internal: the GPU name for --deviceless_json.")

CORRECTNESS_STEPS = 3
LOSS_TOLERANCE, PARAM_TOLERANCE, BF16_TOLERANCE = 1e-4, 1e-4, 0.02
BF16_BOUNDED_TERMS = ("loss_clip_mvs", "loss_iss", "loss_tss")  # Not loss_nns: see the module docstring.
BATCHES, DRY_BATCHES = (1024, 768, 512, 256, 128), (16, 8)
REMATS = ("none", "save_dots", "full")
SPEED_MODELS = (("DeCLIP ViT-B/32", "declip_vit_b32"), ("CLIP ViT-B/32", "clip_vit_b32"),
                ("DeCLIP ViT-B/16", "declip_vit_b16"))


# ---------------------------------------------------------------------------------------------------- environment

def _version(module: str) -> str:
  try:
    return importlib.import_module(module).__version__
  except (ImportError, AttributeError):
    return "not installed"


def accelerator():
  """The device the check measures: the default backend's first device (the CPU in a dry run)."""
  return jax.devices("cpu")[0] if _DRY_RUN.value else jax.devices()[0]


def device_memory_bytes(device) -> int | None:
  try:
    return (device.memory_stats() or {}).get("bytes_limit")
  except Exception:  # pylint: disable=broad-except  (CPU devices may not report)
    return None


def environment() -> dict:
  device = accelerator()
  memory = device_memory_bytes(device)
  return {"jax": jax.__version__, "jaxlib": _version("jaxlib"), "flax": _version("flax"),
          "optax": _version("optax"), "orbax_checkpoint": _version("orbax.checkpoint"),
          "backend": device.platform, "device_kind": device.device_kind,
          "device_count": len(jax.devices(device.platform)),
          "device_memory_gib": memory / 2**30 if memory else None, "host": host_info.describe(),
          "dry_run": _DRY_RUN.value, "date": time.strftime("%Y-%m-%d")}


def peak_bf16_tflops(device_kind: str) -> float | None:
  """The chip's dense bf16 peak from flops.PEAK_BF16_TFLOPS by name (None for a CPU or an unknown chip)."""
  kind = device_kind.upper()
  for name, peak in sorted(flops.PEAK_BF16_TFLOPS.items(), key=lambda kv: -len(kv[0])):
    if name.upper().replace(" SXM", "") in kind:
      return peak
  return None


# ---------------------------------------------------------------------------------------------------- correctness

def _relative(a: float, b: float) -> float:
  return abs(a - b) / max(abs(b), 1.0)


def _run_steps(config, device, host_state, batches, precision=None):
  """Runs the steps from `host_state` on one device; returns (per-step loss metrics, final params on host)."""
  setup = train_setup.Setup(config, [device])
  state = jax.device_put(host_state, setup.shardings)
  step = setup.jit_train_step(config)
  losses = []
  with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
    for batch in batches:
      state, metrics = step(state, parallel.host_to_global(batch, setup.mesh))
      losses.append({k: float(v) for k, v in metrics.items() if k.startswith("loss")})
  return losses, jax.device_get(state.params)


def correctness() -> dict:
  """Accelerator vs CPU backend in float32 ("highest" matmul precision); bf16 vs float32 on the accelerator."""
  config = tiny_config()
  cpu, device = jax.devices("cpu")[0], accelerator()
  setup = train_setup.Setup(config, [cpu])
  host_state = jax.device_get(setup.init_state())
  batches = [b for _, b in zip(range(CORRECTNESS_STEPS), synthetic.batches(config, setup.token_ids))]
  on_cpu, cpu_params = _run_steps(config, cpu, host_state, batches, "highest")
  on_device, device_params = _run_steps(config, device, host_state, batches, "highest")
  loss_diff = max(_relative(a[k], b[k]) for a, b in zip(on_device, on_cpu) for k in b)
  param_diff = max(float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(float(np.max(np.abs(b))), 1e-30))
                   for a, b in zip(jax.tree.leaves(device_params), jax.tree.leaves(cpu_params)) if np.size(b))
  bf16 = config.copy_and_resolve_references()
  bf16.model.dtype = "bfloat16"
  on_device_bf16, _ = _run_steps(bf16, device, host_state, batches)
  finite = all(np.isfinite(v) for step in on_device_bf16 for v in step.values())
  bf16_diff = max(_relative(a[k], b[k]) for a, b in zip(on_device_bf16, on_device) for k in BF16_BOUNDED_TERMS)
  bf16_nns_diff = max(_relative(a[k], b[k]) for a, b in zip(on_device_bf16, on_device) for k in ("loss_nns", "loss"))
  return {"steps": CORRECTNESS_STEPS, "float32_losses_device": on_device, "float32_losses_cpu": on_cpu,
          "bf16_losses_device": on_device_bf16, "loss_max_relative_difference": loss_diff,
          "param_max_relative_difference": param_diff, "bf16_loss_max_relative_difference": bf16_diff,
          "bf16_finite": finite, "bf16_nns_and_total_max_relative_difference": bf16_nns_diff,
          "passed": bool(loss_diff <= LOSS_TOLERANCE and param_diff <= PARAM_TOLERANCE and finite
                         and bf16_diff <= BF16_TOLERANCE)}


# ---------------------------------------------------------------------------------------------------- compile memory

COMPILE_MEMORY_BATCH = 128  # The recipe's per-GPU batch.


def _compile(config, devices) -> dict:
  start = time.perf_counter()
  attempt = ladder.try_compile(config, devices, "as configured", {})
  return {"planned_peak_gib": attempt.needed_gib, "compile_s": time.perf_counter() - start}


def deviceless_only() -> int:
  """The --deviceless_json process: the compile-memory config for --deviceless_target, no GPU used."""
  try:
    result = _compile(speed_config("declip_vit_b32", COMPILE_MEMORY_BATCH, "none"),
                      gpu_target.devices(_DEVICELESS_TARGET.value, 1, 1))
  except Exception as e:  # pylint: disable=broad-except  (no CUDA plugin or ptxas; a compiler failure)
    result = {"error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"}
  with open(_DEVICELESS_JSON.value, "w") as f:
    json.dump(result, f)
  return 0


def compile_memory() -> dict:
  """Planned peak of the same step compiled deviceless (subprocess) and on the device (see the docstring)."""
  device = accelerator()
  target = "h100" if _DRY_RUN.value else gpu_target.for_device_kind(device.device_kind)
  out = {"config": f"DeCLIP ViT-B/32, {COMPILE_MEMORY_BATCH} per device, bf16, remat none", "target": target}
  if target is None:
    out["deviceless"] = {"error": f"no GPU description for {device.device_kind!r} in declip_jax/aot/gpu_targets"}
  else:
    path = os.path.join(_OUT.value, "deviceless_compile.json")
    args = [sys.executable, __file__, f"--deviceless_json={path}", f"--deviceless_target={target}", "--out=-"]
    done = subprocess.run(args + (["--dry_run"] if _DRY_RUN.value else []), capture_output=True, text=True,
                          timeout=900)
    out["deviceless"] = (json.load(open(path)) if os.path.exists(path) else
                         {"error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"})
  out["on_device"] = _compile(speed_config("declip_vit_b32", COMPILE_MEMORY_BATCH, "none"), [device])
  return out


# ---------------------------------------------------------------------------------------------------- speed

def speed_config(module: str, batch: int, remat: str, attention: str = ""):
  """The recipe config of `module` for one device at `batch` images, bf16, with `remat` on both towers."""
  config = importlib.import_module(f"configs.{module}").get_config()
  config.data.source, config.data.tokenizer, config.data.vocab_path = "builtin", "word", ""
  config.train.batch_size = batch
  config.model.dtype = "bfloat16"
  config.model.image.remat = config.model.text.remat = remat
  config.model.attention_implementation = attention
  config.mesh.shape = (1, 1, 1)
  config.ssl.bn_group_size = min(128, batch)
  config.nns.groups, config.nns.group_size = 1, 65_536
  if _DRY_RUN.value:  # Tiny towers and images: every line runs on a CPU in seconds.
    config.model.image.image_size, config.model.image.width, config.model.image.layers = 32, 64, 2
    config.model.image.heads = 2
    config.model.image.patch_size = min(config.model.image.patch_size, 16)
    config.model.text.context_length, config.model.text.width, config.model.text.layers = 16, 64, 2
    config.model.text.heads, config.model.text.vocab_size, config.model.embed_dim = 2, 1000, 32
    config.ssl.projector_dim, config.ssl.predictor_hidden_dim = 64, 32
    config.ssl.bn_group_size = min(8, batch)
    config.nns.group_size, config.nns.chunk_size = 256, 128
  return config


def time_step(config, device, steps: int) -> dict:
  """Compiles the step; if its planned peak fits the device, runs 1 + `steps` steps and returns the median."""
  setup = train_setup.Setup(config, [device])
  batch = parallel.host_to_global(synthetic.batch(config, setup.token_ids), setup.mesh)
  start = time.perf_counter()
  compiled = setup.jit_train_step(config).lower(setup.abstract_state, batch).compile()
  compile_s = time.perf_counter() - start
  peak = ladder.peak_gib(ladder.memory_report(compiled)) * 2**30 if compiled.memory_analysis() is not None else None
  limit = device_memory_bytes(device)
  if peak is not None and limit is not None and peak > limit:
    return {"ran": False, "why": f"planned peak {peak / 2**30:.1f} GiB > {limit / 2**30:.1f} GiB",
            "compile_s": compile_s}
  state = setup.init_state()
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  return {"ran": True, "compile_s": compile_s, "step_s": statistics.median(times),
          "planned_peak_gib": peak / 2**30 if peak is not None else None,
          "loss": float(metrics["loss"])}


def _attempt(config, device, steps: int) -> dict:
  try:
    return time_step(config, device, steps)
  except Exception as e:  # pylint: disable=broad-except  (out of memory at run time, unsupported kernels)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    return {"ran": False, "why": f"{type(e).__name__}: {first}"}
  finally:
    gc.collect()


def _rates(config, row: dict, peak: float | None, matmul: float) -> dict:
  batch = config.train.batch_size
  model_tflop = flops.train_step(config)["total"] / 1e12
  achieved = model_tflop / row["step_s"]
  return {"images_per_s": batch / row["step_s"], "model_tflop_per_step": model_tflop,
          "model_tflops": achieved, "mfu_vs_peak": achieved / peak if peak else None,
          "mfu_vs_matmul": achieved / matmul}


def speed(results: dict, save) -> None:
  """Fills results["speed"] (one row per model) and results["attention"], saving after every row."""
  device, start = accelerator(), time.perf_counter()
  budget = float("inf") if _DRY_RUN.value else _BUDGET_S.value
  peak = peak_bf16_tflops(device.device_kind)
  matmul = host_info.matmul_tflops(256 if _DRY_RUN.value else 8192, "bfloat16", device, repeats=10)
  results["matmul_bf16_tflops"], results["peak_bf16_tflops"] = matmul, peak
  steps = 2 if _DRY_RUN.value else _STEPS.value
  rows = results["speed"] = []
  for name, module in SPEED_MODELS:
    tried = []
    row = {"model": name, "config": f"configs/{module}.py", "tried": tried}
    rows.append(row)
    for batch in (DRY_BATCHES if _DRY_RUN.value else BATCHES):
      for remat in REMATS:
        if time.perf_counter() - start > budget:
          row["note"] = f"stopped: the {budget:.0f} s budget was spent"
          break
        config = speed_config(module, batch, remat)
        attempt = _attempt(config, device, steps)
        tried.append({"batch": batch, "remat": remat, **attempt})
        save()
        if attempt["ran"]:
          row.update(batch=batch, remat=remat, **attempt, **_rates(config, attempt, peak, matmul))
          break
      if "step_s" in row or "note" in row:
        break
    save()
  b32 = rows[0]
  attention = results["attention"] = []
  if "step_s" in b32:
    for impl in ("xla", "cudnn"):
      if time.perf_counter() - start > budget + 60:
        attention.append({"implementation": impl, "ran": False, "why": "not run: the time budget was spent"})
        continue
      config = speed_config("declip_vit_b32", b32["batch"], b32["remat"], impl)
      attempt = _attempt(config, device, steps)
      attention.append({"implementation": impl, **attempt,
                        **(_rates(config, attempt, peak, matmul) if attempt["ran"] else {})})
      save()


# ---------------------------------------------------------------------------------------------------- report

def _fmt(value, spec: str, missing: str = "-") -> str:
  return missing if value is None else format(value, spec)


def markdown(r: dict) -> str:
  env = r["environment"]
  memory = _fmt(env.get("device_memory_gib"), ".1f")
  lines = [f"# Device check, {env['date']}{' (dry run: CPU, tiny shapes)' if env['dry_run'] else ''}", "",
           f"- device: {env['device_count']} x {env['device_kind']} ({env['backend']}), {memory} GiB usable "
           f"by JAX each", f"- host: {env['host']}",
           f"- jax {env['jax']}, jaxlib {env['jaxlib']}, flax {env['flax']}, optax {env['optax']}, "
           f"orbax-checkpoint {env['orbax_checkpoint']}", ""]
  c = r.get("correctness")
  if c:
    lines += ["## Correctness (tiny config, 3 steps, same initial state and batches)", "",
              "| check | measured | bound | |", "|---|---|---|---|",
              f"| float32 losses, device vs CPU | {c['loss_max_relative_difference']:.2e} | {LOSS_TOLERANCE:g} | "
              f"{'ok' if c['loss_max_relative_difference'] <= LOSS_TOLERANCE else 'FAIL'} |",
              f"| float32 parameters after 3 steps, device vs CPU | {c['param_max_relative_difference']:.2e} | "
              f"{PARAM_TOLERANCE:g} | {'ok' if c['param_max_relative_difference'] <= PARAM_TOLERANCE else 'FAIL'} |",
              f"| bf16 CLIP+MVS, ISS, TSS vs float32 (finite: {c['bf16_finite']}) | "
              f"{c['bf16_loss_max_relative_difference']:.2e} | {BF16_TOLERANCE:g} | "
              f"{'ok' if c['bf16_loss_max_relative_difference'] <= BF16_TOLERANCE else 'FAIL'} |",
              f"| bf16 NNS and total vs float32 (neighbour argmax near-ties) | "
              f"{c['bf16_nns_and_total_max_relative_difference']:.2e} | reported | |", ""]
  m = r.get("compile_memory")
  if m:
    less, more = m["deviceless"], m["on_device"]
    lines += [f"## Compile memory ({m['config']}; deviceless target: {m['target']})", "",
              "| compile | planned peak GiB | compile s | |", "|---|---|---|---|",
              f"| XLA's GPU compiler without the GPU (no autotuning) | {_fmt(less.get('planned_peak_gib'), '.2f')} | "
              f"{_fmt(less.get('compile_s'), '.0f')} | {less.get('error', '')} |",
              f"| on the device (autotuned) | {_fmt(more.get('planned_peak_gib'), '.2f')} | "
              f"{_fmt(more.get('compile_s'), '.0f')} | |", ""]
  if "speed" in r:
    lines += [f"## Speed (bf16 compute, 224 px, one device; bf16 matmul measured here: "
              f"{r['matmul_bf16_tflops']:.0f} TFLOP/s, chip peak: {_fmt(r['peak_bf16_tflops'], '.0f', 'unknown')})",
              "", "| model | per-device batch | remat | step ms | images/s | model TFLOP/s | MFU vs peak | "
              "MFU vs matmul | planned peak GiB | compile s | attempts |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["speed"]:
      if "step_s" in row:
        lines.append(f"| {row['model']} | {row['batch']} | {row['remat']} | {row['step_s'] * 1e3:.1f} | "
                     f"{row['images_per_s']:,.0f} | {row['model_tflops']:.1f} | {_fmt(row['mfu_vs_peak'], '.1%')} | "
                     f"{row['mfu_vs_matmul']:.1%} | {_fmt(row.get('planned_peak_gib'), '.1f')} | "
                     f"{row['compile_s']:.0f} | {len(row['tried'])} |")
      else:
        lines.append(f"| {row['model']} | none ran | | | | | | | | | {len(row['tried'])} "
                     f"({row.get('note', 'see the JSON')}) |")
    lines += ["", "| B/32 DeCLIP step, attention implementation | step ms | images/s | |", "|---|---|---|---|"]
    for a in r.get("attention", []):
      lines.append(f"| {a['implementation']} | {_fmt(a.get('step_s') and a['step_s'] * 1e3, '.1f')} | "
                   f"{_fmt(a.get('images_per_s'), ',.0f')} | {'' if a['ran'] else a['why']} |")
  if r.get("errors"):
    lines += ["", "## Errors", ""] + [f"- {e}" for e in r["errors"]]
  return "\n".join(lines) + "\n"


def main(_):
  if _DEVICELESS_JSON.value:
    return deviceless_only()
  out = _OUT.value
  if not out:
    raise app.UsageError("--out=OUTDIR is required")
  os.makedirs(out, exist_ok=True)
  results = {"environment": environment(), "errors": []}

  def save():
    with open(os.path.join(out, "device_check.json"), "w") as f:
      json.dump(results, f, indent=1)
    with open(os.path.join(out, "device_check.md"), "w") as f:
      f.write(markdown(results))

  save()
  for name, section in (("compile_memory", lambda: results.update(compile_memory=compile_memory())),
                        ("correctness", lambda: results.update(correctness=correctness())),
                        ("speed", lambda: speed(results, save))):
    try:
      section()
    except Exception:  # pylint: disable=broad-except  (report it, keep the other section's numbers)
      results["errors"].append(f"{name}: {traceback.format_exc(limit=3).strip().splitlines()[-1]}")
      traceback.print_exc()
    save()
  print(markdown(results))
  return 0 if not results["errors"] and results.get("correctness", {}).get("passed") else 1


if __name__ == "__main__":
  app.run(main)
