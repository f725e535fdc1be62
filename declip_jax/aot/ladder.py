"""The ladder of settings that make a train step fit: compile the step for a target's devices without the
hardware, read its planned memory (or the compiler's refusal), and walk `LADDER`, cheapest settings first (bf16
compute, rematerialisation, gradient accumulation, FSDP, then a smaller per-device batch), until one fits; the
verdict and, for GPUs, a roofline bound on the step's time. `declip_jax/aot/cli.py` is the command line
(`python -m declip_jax.aot`); `targets.py` gives the devices of a target.
"""


import dataclasses
import re
from typing import Any, Optional


_GIB = 1 << 30
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

# (label, overrides) applied cumulatively, in this order: the cheapest in step time first. bf16 compute is faster than
# float32 (parameters, optimizer state and losses stay float32); "save_dots" recomputes only the element-wise work,
# "full" the whole layer (~1/3 more compute); exact gradient accumulation (training/accumulation.py) runs the towers per
# micro-batch, the same update for a second forward run of the towers (as full remat costs, but it divides every
# activation, not only the layers' insides, so it comes first); FSDP splits parameters and optimizer moments over every
# device (all-gathers per layer); a smaller per-device batch changes the recipe's global batch unless the slice grows
# with it. Callables take the config as it is at that rung. A rung the config cannot take (e.g. accumulation whose
# micro-batches would split a ResNet's BatchNorm groups) is reported and passed over.
LADDER = (
    ("as configured", {}),
    ("+ bf16 compute", {"model.dtype": "bfloat16"}),
    # Remat with the layers in a loop: without one XLA's GPU compiler did not keep the recomputation apart
    # (docs/design.md §21: ViT-L/14 with full remat planned 67.5 GiB per H100 without the loop, 21.3 with it).
    ("+ remat save_dots (both towers)", {"model.image.remat": "save_dots", "model.text.remat": "save_dots",
                                         "model.scan_unroll": 1}),
    ("+ accumulation over 4 micro-batches", {"train.accum_steps": 4}),
    ("+ accumulation over 16 micro-batches", {"train.accum_steps": 16}),
    ("+ remat full (both towers)", {"model.image.remat": "full", "model.text.remat": "full", "model.scan_unroll": 1}),
    ("+ FSDP over all devices", {"mesh.shape": (1, -1, 1)}),
    ("+ half the per-device batch", {"train.batch_size": lambda c: c.train.batch_size // 2}),
    ("+ a quarter of the per-device batch", {"train.batch_size": lambda c: c.train.batch_size // 2}),
)


@dataclasses.dataclass
class Attempt:
  """One compile: the settings (cumulative overrides), and what libtpu/XLA said.

  Attributes:
    fits: the program compiled (on TPU: it fits the device's HBM).
    needed_gib: per-device memory: the planned peak when it compiled, libtpu's requirement when it did not.
    what: what `needed_gib` measures.
    error: the first line of the compiler's or the config's refusal, or None.
  """

  label: str
  overrides: dict
  fits: bool
  needed_gib: Optional[float]
  what: str
  error: Optional[str] = None
  cost: Optional[dict] = None  # The compiled program's "flops" and "bytes accessed" (`compiled_cost`).


def compile_train_step(config, devices):
  """The train step compiled for a mesh over `devices` (real, fake CPU, or topology devices)."""
  import jax  # pylint: disable=g-import-not-at-top
  from declip_jax import parallel  # pylint: disable=g-import-not-at-top
  from declip_jax.training import state as state_lib, train_setup
  config = config.copy_and_resolve_references()
  config.data.source, config.data.tokenizer, config.data.vocab_path = "builtin", "word", ""
  setup = train_setup.Setup(config, devices, compile_only=True)
  batch_sharding = parallel.batch_sharding(setup.mesh)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
           for k, v in state_lib.sample_batch_spec(config).items()}
  return setup.jit_train_step(config).lower(setup.abstract_state, batch).compile()


def memory_report(compiled) -> dict[str, float]:
  """Per-device GiB from the compiled executable's memory analysis."""
  m = compiled.memory_analysis()
  report = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
            "aliased (donated state)": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes,
            "generated code": m.generated_code_size_in_bytes}
  report = {k: v / _GIB for k, v in report.items()}
  report["peak estimate (arguments + outputs - aliased + temporaries)"] = peak_gib(report)
  return report


def compiled_cost(compiled) -> Optional[dict]:
  """{"flops", "bytes accessed"} of a compiled program, per device, by XLA's cost analysis; None when there is
  none. A deviceless GPU executable has none of its own: its optimised module is analysed with the CPU client's
  cost model (the same HLO cost analysis). Either way a while loop's body (scanned layers) is counted once."""
  cost = None
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    if not cost:
      import jax  # pylint: disable=g-import-not-at-top
      from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
      cost = _jax.hlo_module_cost_analysis(jax.devices("cpu")[0].client,
                                           compiled.runtime_executable().hlo_modules()[0])
  except Exception:  # pylint: disable=broad-except  (private API; the verdict does not need it)
    return None
  return {k: float(cost[k]) for k in ("flops", "bytes accessed") if k in cost} or None


def peak_gib(report: dict[str, float]) -> float:
  return report["arguments"] + report["outputs"] - report["aliased (donated state)"] + report["temporaries"]


def _size_bytes(text: str) -> float:
  """"32.51G" -> bytes."""
  return float(text[:-1]) * _UNITS[text[-1]]


def parse_out_of_memory(message: str) -> Optional[tuple[float, float, str]]:
  """(needed GiB, available GiB, what was needed) from libtpu's refusal of a program that does not fit HBM, or
  None if the message is not one. Knows both phrasings: "... required for HLO temporaries (32.51G) exceeds
  available HBM (15.75G)" and "Used 20.21G of 15.75G hbm"."""
  size = r"(\d+(?:\.\d+)?[KMGT])"
  match = re.search(rf"required for ([\w ]+?) \({size}\) exceeds available HBM \({size}\)", message)
  if match:
    return _size_bytes(match.group(2)) / _GIB, _size_bytes(match.group(3)) / _GIB, match.group(1)
  match = re.search(rf"Used {size} of {size} hbm", message)
  if match:
    return _size_bytes(match.group(1)) / _GIB, _size_bytes(match.group(2)) / _GIB, "HBM in total"
  return None


def available_hbm_gib(device) -> Optional[float]:
  """HBM per device as libtpu reckons it: the figure in its refusal of a 1 TiB program (None off TPU)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  sharding = jax.sharding.SingleDeviceSharding(device)
  probe = jax.jit(lambda x: jnp.sin(x) + x[::-1], in_shardings=sharding, out_shardings=sharding)
  try:
    probe.lower(jax.ShapeDtypeStruct((2**38,), jnp.float32, sharding=sharding)).compile()
  except Exception as e:  # pylint: disable=broad-except
    parsed = parse_out_of_memory(str(e))
    return parsed[1] if parsed else None
  return None


def apply_overrides(config, overrides: dict):
  """A copy of `config` with "a.b.c": value set for each override (a callable value gets the config)."""
  config = config.copy_and_resolve_references()
  for path, value in overrides.items():
    parent, leaf = path.rsplit(".", 1)
    _get(config, parent)[leaf] = value(config) if callable(value) else value
  return config


def try_compile(config, devices, label: str, overrides: dict, available: Optional[float] = None) -> Attempt:
  """Compiles the step for `config`; a refusal for memory (or an invalid config) is an Attempt, not a raise.

  libtpu refuses a program only when its temporaries alone exceed the HBM; the state and batch (arguments) need
  room too, so a compiled program fits only when its planned peak (arguments + outputs - aliased + temporaries)
  is at most `available` GiB (None: no limit known)."""
  from declip_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  try:
    compiled = compile_train_step(config, devices)
  except config_lib.ConfigError as e:
    return Attempt(label, overrides, False, None, "", f"invalid config: {e}")
  except Exception as e:  # pylint: disable=broad-except  (jax raises JaxRuntimeError / XlaRuntimeError)
    parsed = parse_out_of_memory(str(e))
    if parsed is None:
      raise
    first_line = str(e).splitlines()[0]
    return Attempt(label, overrides, False, parsed[0], parsed[2], first_line)
  peak, cost = peak_gib(memory_report(compiled)), compiled_cost(compiled)
  if available is not None and peak > available:
    return Attempt(label, overrides, False, peak, "planned peak", "compiles, but temporaries + state + batch "
                   f"need {peak:.2f} GiB of {available:.2f}", cost)
  return Attempt(label, overrides, True, peak, "planned peak", cost=cost)


def fit(config, devices, available: Optional[float], ladder=LADDER, stop_at_first_fit: bool = True,
        report=None) -> list[Attempt]:
  """Walks `ladder` (cumulative overrides) from the config as given until a rung fits `available` GiB per
  device; returns every attempt.

  report: called with each Attempt as it is made (progress for long walks)."""
  attempts, overrides = [], {}
  for i, (label, rung) in enumerate(ladder):
    current = apply_overrides(config, overrides)
    step = {k: v(current) if callable(v) else v for k, v in rung.items()}
    step = {k: v for k, v in step.items() if _saves_memory(k, _get(current, k), v)}
    if devices is not None and len(devices) == 1:
      step.pop("mesh.shape", None)  # FSDP over one device splits nothing.
    if i and not step:
      continue  # The config already has this rung's settings (or stronger ones).
    overrides = {**overrides, **step}
    attempt = try_compile(apply_overrides(config, overrides), devices, label, dict(overrides), available)
    attempts.append(attempt)
    if report:
      report(attempt)
    if i and attempt.error and attempt.error.startswith("invalid config"):
      overrides = {k: v for k, v in overrides.items() if k not in step}  # Pass this rung over.
    if attempt.fits and stop_at_first_fit:
      break
  return attempts


_REMAT_STRENGTH = {"none": 0, "save_dots": 1, "full": 2}


def _get(config, path: str):
  node = config
  for key in path.split("."):
    node = node[key]
  return node


def _saves_memory(path: str, old, new) -> bool:
  """Whether setting `path` from `old` to `new` is a change the ladder should make: remat only ever gets
  stronger (a config with "full" keeps it), other keys when they change."""
  if path.endswith(".remat"):
    return _REMAT_STRENGTH[new] > _REMAT_STRENGTH[old]
  return tuple(new) != tuple(old) if isinstance(new, (tuple, list)) else new != old


def as_flags(overrides: dict) -> str:
  """The command-line flags that set `overrides`."""
  def value(v: Any) -> str:
    return f"'{tuple(v)}'" if isinstance(v, (tuple, list)) else str(v)
  return " ".join(f"--config.{k}={value(v)}" for k, v in overrides.items()) or "(nothing to change)"


def verdict(attempts: list[Attempt], available: Optional[float]) -> str:
  """One paragraph: does the config fit as given, how much it needs and has, and what makes it fit."""
  first, fitting = attempts[0], next((a for a in attempts if a.fits), None)
  of = f" of {available:.2f} GiB" if available else ""
  if first.fits:
    return f"FITS as configured: planned peak {first.needed_gib:.2f} GiB per device{of}."
  if first.needed_gib is None:
    need = first.error
  elif first.what == "planned peak":
    need = f"needs {first.needed_gib:.2f} GiB per device{of}"
  else:
    need = f"needs over {first.needed_gib:.2f} GiB per device (its {first.what} alone){of}"
  text = f"DOES NOT FIT as configured: {need}."
  if fitting is None:
    return text + " No setting of the ladder makes it fit: use a slice with more devices."
  return (text + f" Fits with {as_flags(fitting.overrides)} (planned peak {fitting.needed_gib:.2f} GiB per "
          f"device{of}).")


def roofline(config, cost: Optional[dict], target, num_devices: int) -> Optional[dict]:
  """A lower bound on a GPU's step time (`target`: a `gpu_target.GpuTarget`): the larger of the model FLOPs per
  device (`flops.train_step`'s executed matmuls, accumulation's second tower forward included; XLA's count when
  larger) over the matrix units' dense peak at
  model.dtype (float32: TF32) and the compiled program's bytes accessed per device over the memory bandwidth.
  Both counts are of what must happen at least (XLA counts a loop's body once: a scanned layer's bytes, and with
  train.accum_steps > 1 the towers' bytes of one micro-batch), so a step takes at least this long and a GPU
  trains at most (per-device batch / it) images per second; with loops the bound is looser, and bounds of steps
  with and without a loop do not compare. An estimate, not a measurement; None without a cost analysis."""
  from declip_jax.aot import flops  # pylint: disable=g-import-not-at-top
  if cost is None or config.model.dtype not in target.matrix_flops:
    return None
  per_device = config.train.batch_size / num_devices
  counted = flops.train_step(config)
  model_flops, executed = counted["total"] / num_devices, counted["executed"] / num_devices
  flop_s = target.matrix_flops[config.model.dtype]
  compute = max(executed, cost.get("flops", 0.0)) / flop_s
  memory = cost.get("bytes accessed", 0.0) / target.memory_bandwidth
  step = max(compute, memory)
  return {"model_tflop": model_flops / 1e12, "executed_tflop": executed / 1e12, "peak_tflops": flop_s / 1e12,
          "compute_ms": 1e3 * compute,
          "gbytes": cost.get("bytes accessed", 0.0) / 1e9, "bandwidth_tbs": target.memory_bandwidth / 1e12,
          "memory_ms": 1e3 * memory, "step_ms": 1e3 * step, "images_per_s": per_device / step,
          "bound": "compute" if compute >= memory else "memory",
          # Accumulation runs the towers in a loop over micro-batches, whose body XLA's bytes count once.
          "bytes_of_one_micro_batch": config.train.accum_steps > 1}


def describe_roofline(estimate: dict, dtype: str) -> str:
  executed = estimate.get("executed_tflop", estimate["model_tflop"])
  runs = (f" ({executed:.2f} TFLOP run: accumulation's second forward of the towers)"
          if executed > estimate["model_tflop"] else "")
  return (f"Roofline estimate (per GPU, the settings that fit): model {estimate['model_tflop']:.2f} TFLOP{runs} / "
          f"{estimate['peak_tflops']:.0f} TFLOP/s ({'TF32' if dtype == 'float32' else dtype} matrix peak) = "
          f"{estimate['compute_ms']:.1f} ms; {estimate['gbytes']:.1f} GB accessed (XLA's count, a loop's body once"
          f"{': the towers of one micro-batch' if estimate.get('bytes_of_one_micro_batch') else ''}) / "
          f"{estimate['bandwidth_tbs']:.2f} TB/s = {estimate['memory_ms']:.1f} ms; a step takes at least "
          f"{estimate['step_ms']:.1f} ms ({estimate['bound']}-bound): at most {estimate['images_per_s']:,.0f} "
          "images/s per GPU.")
