"""NVIDIA GPU targets for XLA's GPU compiler without a GPU: their descriptions, their memory and peak rates, and
topology devices to compile for (`declip_jax.aot --target=gpu:<name>:<gpus>`).

A target is XLA's own `GpuTargetConfigProto` text for that GPU (`gpu_targets/<name>.txtpb`: copied from XLA's
`xla/backends/gpu/target_config/specs/`, Apache 2.0, see gpu_targets/README.md). With `JAX_PLATFORMS=cpu`, the
CUDA plugin (`jax-cuda12-plugin` + `jax-cuda12-pjrt` at JAX's version) and `ptxas` (the `nvidia-cuda-nvcc-cu12`
wheel), `jax.experimental.topologies.get_topology_desc(platform="cuda", ...)` gives devices that `jit(...).lower(
...).compile()` compiles for with the same compiler a GPU run uses, except that it cannot autotune kernels.
"""

import dataclasses
import importlib.util
import os
import pathlib
import re
import shutil

from declip_jax import xla_workarounds

_SPECS = pathlib.Path(__file__).parent / "gpu_targets"
GPUS = {  # --target name -> (description file, what it is).
    "h100": ("h100.txtpb", "NVIDIA H100 80GB HBM3 (SXM)"),
    "h100-pcie": ("h100-pcie.txtpb", "NVIDIA H100 PCIe 80GB"),
    "h200": ("h200.txtpb", "NVIDIA H200 141GB HBM3e"),
    "a100-40": ("a100-40.txtpb", "NVIDIA A100-SXM4-40GB"),
    "a100-80": ("a100-80.txtpb", "NVIDIA A100-SXM4-80GB"),
    "a100-80-pcie": ("a100-80-pcie.txtpb", "NVIDIA A100 80GB PCIe"),
    "b200": ("b200.txtpb", "NVIDIA B200"),
}
# Fields XLA added to the description after jaxlib 0.10; jaxlib 0.10.x refuses a description that has them
# ("Failed to parse GpuTargetConfigProto"), so they are left out for it.
NEWER_FIELDS = ("mem_clock_ghz", "reserved_shared_memory_per_block", "max_blocks_per_multiprocessor",
                "collective_memory_granularity")
# XLA's PrimitiveType numbers, as the description's rate tables key them.
_PRIMITIVE_TYPES = {"float32": 11, "bfloat16": 16}
# JAX allocates this fraction of a GPU's memory at start unless told otherwise (XLA_PYTHON_CLIENT_MEM_FRACTION).
DEFAULT_MEM_FRACTION = 0.75


class TargetError(ValueError):
  """An unknown GPU name or a target string of the wrong form; the message lists what is known."""


@dataclasses.dataclass(frozen=True)
class GpuTarget:
  """A GPU model as XLA describes it.

  Attributes:
    name: the --target name (`GPUS`).
    text: the `GpuTargetConfigProto` text.
    memory_bytes: the device memory (`device_memory_size`).
    memory_bandwidth: bytes/s (`memory_bandwidth`).
    matrix_flops: dtype -> dense matrix-unit FLOP/s (2 x clock x units x ops per clock x cores; float32 is
      TF32, what XLA's default precision runs float32 matmuls as on these GPUs).
  """

  name: str
  text: str
  memory_bytes: int
  memory_bandwidth: float
  matrix_flops: dict

  @property
  def title(self) -> str:
    return GPUS[self.name][1]

  def usable_gib(self) -> float:
    """What JAX will allocate for arrays: the memory times XLA_PYTHON_CLIENT_MEM_FRACTION (0.75 by default)."""
    fraction = float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", DEFAULT_MEM_FRACTION))
    return self.memory_bytes * fraction / 2**30


def _number(text: str, field: str) -> float:
  match = re.search(rf"^\s*{field}: ([\d.e+]+)", text, re.M)
  if not match:
    raise TargetError(f"GPU description without {field}")
  return float(match.group(1))


def _matrix_rates(text: str) -> dict[int, float]:
  """PrimitiveType -> FLOP/s of the `matrix_unit_description` block."""
  block = text[text.index("matrix_unit_description"):]
  block = block[:block.index("\n  }\n")]
  cores = _number(text, "core_count")
  rates = re.findall(r"key: (\d+)\s*value \{\s*clock_rate_ghz: ([\d.]+)\s*units_per_core: (\d+)\s*"
                     r"ops_per_clock: (\d+)", block)
  return {int(k): 2 * float(ghz) * 1e9 * int(units) * int(ops) * cores for k, ghz, units, ops in rates}


def load(name: str) -> GpuTarget:
  """The named target (`GPUS`)."""
  if name not in GPUS:
    raise TargetError(f"unknown GPU {name!r}; known: {', '.join(GPUS)}.")
  text = (_SPECS / GPUS[name][0]).read_text()
  rates = _matrix_rates(text)
  return GpuTarget(name, text, int(_number(text, "device_memory_size")), _number(text, "memory_bandwidth"),
                   {dtype: rates[key] for dtype, key in _PRIMITIVE_TYPES.items() if key in rates})


def for_device_kind(device_kind: str) -> str | None:
  """The target name of a real GPU's `device_kind` (e.g. "NVIDIA H200" -> "h200"), or None."""
  kind = device_kind.lower()
  for name, (spec_file, _) in GPUS.items():
    described = re.search(r'device_description_str: "([^"]+)"', (_SPECS / spec_file).read_text()).group(1)
    if described.lower() == kind or described.lower().startswith(kind + " "):
      return name
  return None


def parse(target: str) -> tuple[str, int, int]:
  """"gpu:<name>:<gpus>" or "gpu:<name>:<hosts>x<gpus per host>" -> (name, hosts, gpus per host)."""
  match = re.fullmatch(r"gpu:([\w-]+):(?:(\d+)x)?(\d+)", target)
  if not match:
    raise TargetError(f"--target {target!r}: expected gpu:<name>:<gpus> or gpu:<name>:<hosts>x<gpus per host>, "
                      f"e.g. gpu:h100:8; GPUs: {', '.join(GPUS)}.")
  name, hosts, gpus = match.group(1), int(match.group(2) or 1), int(match.group(3))
  load(name)  # An unknown name fails here, listing the known ones.
  if hosts < 1 or gpus < 1:
    raise TargetError(f"--target {target!r}: hosts and GPUs must be positive.")
  return name, hosts, gpus


def without_newer_fields(text: str) -> str:
  return "".join(line for line in text.splitlines(keepends=True)
                 if not line.strip().startswith(tuple(f"{field}:" for field in NEWER_FIELDS)))


def has_module(name: str) -> bool:
  """Whether `name` (e.g. "jax_plugins.xla_cuda12") is importable, without importing it."""
  try:
    return importlib.util.find_spec(name) is not None
  except ModuleNotFoundError:  # Its parent package is missing.
    return False


def check_compiler_installed() -> None:
  """Raises TargetError saying what to install when the CUDA plugin or ptxas is missing, or JAX would start a
  GPU backend (the deviceless compile needs JAX_PLATFORMS=cpu, set before JAX is imported)."""
  if not (has_module("jax_plugins.xla_cuda12") or has_module("jax_plugins.xla_cuda13")):
    raise TargetError("XLA's GPU compiler is not installed: pip install -r requirements-gpu-aot.txt (Python 3.12+: "
                      "jax-cuda12-plugin and jax-cuda12-pjrt at JAX's version, and the nvidia-cuda-nvcc-cu12 "
                      "wheel for ptxas).")
  if shutil.which("ptxas") is None and not (has_module("nvidia.cuda_nvcc") or has_module("nvidia.cu13")):
    raise TargetError("ptxas not found: pip install nvidia-cuda-nvcc-cu12 (or put a CUDA toolkit's bin on PATH).")
  if os.environ.get("JAX_PLATFORMS") != "cpu":
    raise TargetError("compiling for a GPU without one needs JAX_PLATFORMS=cpu in the environment before JAX "
                      "starts (python -m declip_jax.aot sets it).")


def devices(name: str, hosts: int, gpus: int) -> list:
  """Topology devices of `hosts` x `gpus` GPUs of the named kind, for XLA's GPU compiler (no GPU needed)."""
  check_compiler_installed()
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  text = load(name).text
  if xla_workarounds.installed_version("jaxlib") < (0, 11):
    text = without_newer_fields(text)
  desc = topologies.get_topology_desc(platform="cuda", target_config=text, topology=f"1x{hosts}x{gpus}")
  return list(desc.devices)
