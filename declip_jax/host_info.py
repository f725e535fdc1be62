"""What machine a benchmark ran on, in one line: CPU model, cores, ISA extensions, accelerators, versions; and
the process's CPU-time / wall-time ratio over a timed region (how many cores it kept busy)."""

import importlib.util
import os
import platform
import time

# The CPU features that decide which matmul kernels XLA/oneDNN/torch can use.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "asimd", "sve")


def has_tensorflow() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo on Linux, platform.processor() elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(("model name", "Model", "Hardware")):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def isa_extensions() -> list[str]:
  """ISA_FLAGS this CPU reports (Linux; empty elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          present = set(line.split(":", 1)[1].split())
          return [flag for flag in ISA_FLAGS if flag in present]
  except OSError:
    pass
  return []


def usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def accelerators() -> str:
  """'8 x NVIDIA H200' / 'cpu' for JAX's default backend (imports jax)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() == "cpu":
    return "no accelerator (JAX on CPU)"
  devices = jax.devices()
  return f"{len(devices)} x {devices[0].device_kind}"


def describe() -> str:
  """One line: CPU model, usable / logical cores, ISA extensions, accelerators, jax and jaxlib versions."""
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  return (f"{cpu_model()}, {usable_cores()} usable of {os.cpu_count()} logical cores, "
          f"{platform.machine()} [{' '.join(isa_extensions()) or 'ISA flags unknown'}]; {accelerators()}; "
          f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, Python {platform.python_version()}")


def matmul_tflops(size: int, dtype: str = "float32", device=None, repeats: int = 5) -> float:
  """A jitted [size, size] x [size, size] matmul of `dtype` (float32 accumulation) on `device` (default: JAX's
  first): TFLOP/s of the best of `repeats` runs, the 'peak' a measured MFU is taken against."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype), device or jax.devices()[0])
  matmul = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32).astype(x.dtype))
  matmul(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best / 1e12


class CpuTimer:
  """Started on creation; `ratio()` is this process's CPU time (user + system, all threads) over wall time."""

  def __init__(self):
    self._cpu, self._wall = time.process_time(), time.perf_counter()

  def ratio(self) -> float:
    return (time.process_time() - self._cpu) / max(time.perf_counter() - self._wall, 1e-9)
