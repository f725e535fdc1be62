"""Ahead-of-time check: compile the train step for a config and a device count without the hardware, and say
whether it fits the devices' memory and, if not, which settings make it fit.

  python -m declip_jax.aot --config=configs/declip_vit_b32.py --target=tpu:v5e:4x8   (needs libtpu)
  python -m declip_jax.aot --config=configs/declip_vit_b32.py --target=gpu:h100:8 --per_device_batch=128
      (needs requirements-gpu-aot.txt: XLA's GPU compiler, no GPU)
  python -m declip_jax.aot --config=configs/declip_vit_b32.py --devices=32 [--target=cpu] [--config.* ...]

`tpu:<chip>:<topology>` compiles with libtpu for a TPU topology described by `jax.experimental.topologies`
(`pip install "jax[tpu]"` brings libtpu; no TPU needed). libtpu refuses a program that does not fit a device's HBM;
this tool turns that refusal into a verdict (and also refuses a program whose temporaries fit but whose temporaries +
state + batch do not: libtpu's compile-time check counts temporaries only) and then walks `LADDER`, cheapest settings
first (bf16 compute, rematerialisation, gradient accumulation, FSDP, then a smaller per-device batch), printing each
attempt, until one fits. The HBM available per device is libtpu's own figure (read from a deliberately oversized probe's
refusal). Exit status: 0 when the config fits as given, 3 when it does not (the suggestion is printed), 1 on errors.

`gpu:<name>:<gpus>` (or `gpu:<name>:<hosts>x<gpus per host>`) compiles with XLA's GPU compiler for that many
GPUs of a kind `declip_jax.aot.gpu_target` describes (h100, h100-pcie, h200, a100-40, a100-80, a100-80-pcie, b200),
deviceless: the CUDA plugin and ptxas compile, nothing runs, and kernels are not autotuned. XLA's GPU compiler
refuses nothing for memory, so the verdict compares the planned peak with what JAX will allocate on that GPU
(its memory times XLA_PYTHON_CLIENT_MEM_FRACTION, 0.75 by default). A GPU verdict ends with a roofline
estimate for the settings that fit: the step takes at least max(model FLOPs / the matrix units' peak at the
compute dtype, bytes accessed / memory bandwidth), so a GPU trains at most batch / that images per second.

`cpu` compiles for that many fake CPU devices: the figures are indicative only (CPU layouts and fusions differ
from TPU/GPU) and there is no memory limit to check against.

The data source and tokenizer do not change the step (only the batch shapes do), so the check runs without the
data: it uses the built-in source and word tokenizer in place of the config's (the embedding table keeps
model.text.vocab_size rows). No TensorFlow is imported.
"""
import dataclasses
import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from declip_jax.aot import gpu_target, targets
from declip_jax.aot.ladder import (LADDER, Attempt, apply_overrides, available_hbm_gib, compile_train_step,
                                   describe_roofline, fit, memory_report, roofline, verdict)

_GIB = 1 << 30


def _print_attempt(a: Attempt) -> None:
  needed = f"{a.needed_gib:.2f} GiB ({a.what})" if a.needed_gib is not None else "-"
  print(f"| {a.label} | {'fits' if a.fits else 'does not fit'} | {needed} | "
        f"{(a.error or '')[:160]} |", flush=True)


_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_DEVICES = flags.DEFINE_integer("devices", 8, "Fake CPU devices to compile for (target cpu).")
_TARGET = flags.DEFINE_string("target", "cpu", "'cpu', 'tpu:<chip>:<topology>' (e.g. tpu:v5e:4x8), or "
                              "'gpu:<name>:<gpus>' / 'gpu:<name>:<hosts>x<gpus per host>' (e.g. gpu:h100:8).")
_PER_DEVICE_BATCH = flags.DEFINE_integer("per_device_batch", 0, "Set train.batch_size to this many examples per "
                                         "device (e.g. the recipe's 128 per GPU); 0: the config's global batch.")
_SUGGEST = flags.DEFINE_bool("suggest", True, "TPU/GPU: when the config does not fit, try the ladder of settings.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "TPU/GPU: also write the attempts, the verdict and the roofline "
                                "estimate to this JSON file.")


def main(argv):
  del argv
  config = _CONFIG.value
  devices, label = targets.devices(_TARGET.value, _DEVICES.value)
  if _PER_DEVICE_BATCH.value:
    config = apply_overrides(config, {"train.batch_size": _PER_DEVICE_BATCH.value * len(devices)})
  b = config.train.batch_size
  print(f"train step of {flags.FLAGS['config'].config_filename}, global batch {b} on {len(devices)} devices "
        f"({b // len(devices)} per device), mesh.shape {tuple(config.mesh.shape)}; {label}")
  if _TARGET.value == "cpu":
    print("| per device | GiB |\n|---|---|")
    for name, gib in memory_report(compile_train_step(config, devices)).items():
      print(f"| {name} | {gib:.2f} |")
    return 0
  gpu = gpu_target.load(gpu_target.parse(_TARGET.value)[0]) if _TARGET.value.startswith("gpu:") else None
  if gpu:
    available = gpu.usable_gib()
    print(f"GPU memory per device: {gpu.memory_bytes / _GIB:.2f} GiB, of which JAX allocates "
          f"{available:.2f} GiB (XLA_PYTHON_CLIENT_MEM_FRACTION, default {gpu_target.DEFAULT_MEM_FRACTION})")
  else:
    available = available_hbm_gib(devices[0])
    print(f"HBM per device (libtpu): {available:.2f} GiB" if available else "HBM per device: unknown")
  print("| settings (cumulative) | verdict | per-device memory | compiler's refusal |\n|---|---|---|---|")
  ladder = LADDER if _SUGGEST.value else LADDER[:1]
  attempts = fit(config, devices, available, ladder, report=_print_attempt)
  print(verdict(attempts, available))
  fitting, estimate = next((a for a in attempts if a.fits), None), None
  if gpu and fitting:
    settings = apply_overrides(config, fitting.overrides)
    estimate = roofline(settings, fitting.cost, gpu, len(devices))
    if estimate:
      print(describe_roofline(estimate, settings.model.dtype))
  if _JSON_OUT.value:
    import jax  # pylint: disable=g-import-not-at-top
    with open(_JSON_OUT.value, "w") as f:
      json.dump({"target": _TARGET.value, "devices": len(devices), "batch": b, "available_gib": available,
                 "jax": jax.__version__, "attempts": [dataclasses.asdict(a) for a in attempts],
                 "verdict": verdict(attempts, available), "roofline": estimate}, f, indent=1, default=str)
  return 0 if attempts[0].fits else 3


def run():
  if any(a.startswith("--target=gpu:") for a in sys.argv):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # XLA's GPU compiler registers only then (no GPU backend).
  if "--target=cpu" in sys.argv or not any(a.startswith("--target") for a in sys.argv):
    count = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--devices=")), "8")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={count}")
  flags.mark_flags_as_required(["config"])
  app.run(main)

