"""XLA flags that work around compiler defects of the JAX versions this code supports, set in XLA_FLAGS before
JAX starts a backend (`declip_jax/__init__.py` applies them, so every entry point gets them).

- jaxlib 0.10.x, NVIDIA GPUs: XLA's GPU compiler fails on the attention block's output projection with
  `INTERNAL: Couldn't find output tile sizes that satisfy hlo: %dot = f32[...] dot(%bitcast, ...)` (a Triton GEMM
  fusion of the attention output; reproduced deviceless for H100 and A100 by
  `jnp.dot(jax.nn.dot_product_attention(q, k, v).reshape(B, L, H * D), w)` in float32, and by every config's
  train step; jaxlib 0.11.2 and 0.12.0.1 compile it). `--xla_gpu_enable_triton_gemm=false` compiles the GEMMs
  with cuBLAS instead. It is set only where it applies and only when XLA_FLAGS does not set the flag already.
  The flag is GPU-only: CPU and TPU programs do not change.
"""

import importlib.metadata
import os
import re

TRITON_GEMM_OFF = "--xla_gpu_enable_triton_gemm=false"


def installed_version(package: str) -> tuple[int, ...]:
  try:
    text = importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return ()
  return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def flags_for(jaxlib_version: tuple[int, ...], xla_flags: str) -> str:
  """XLA_FLAGS with the workarounds `jaxlib_version` needs added (those XLA_FLAGS does not set already)."""
  if jaxlib_version and jaxlib_version < (0, 11) and "xla_gpu_enable_triton_gemm" not in xla_flags:
    return f"{xla_flags} {TRITON_GEMM_OFF}".strip()
  return xla_flags


def apply() -> None:
  """Adds the installed jaxlib's workarounds to os.environ["XLA_FLAGS"] (read when JAX starts a backend)."""
  current = os.environ.get("XLA_FLAGS", "")
  updated = flags_for(installed_version("jaxlib"), current)
  if updated != current:
    os.environ["XLA_FLAGS"] = updated
