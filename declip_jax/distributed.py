"""Multi-process start-up: `jax.distributed.initialize` when the run spans several processes (docs/design.md §5).

Must run before anything touches a JAX backend (the CLI calls it first). With `distributed.mode = "auto"` it
initialises when the config gives `num_processes` > 1 or the environment is a multi-process cluster JAX can
read by itself (SLURM with several tasks, a multi-host Cloud TPU slice, Open MPI); coordinator, process count and
id then come from that environment.
"""

import os
from typing import Optional

import jax
import ml_collections
from absl import logging


def _cluster_environment() -> str:
  """A multi-process environment JAX's cluster detection understands, or ''."""
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return "SLURM"
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", "") or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "multi-host TPU"
  if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "Open MPI"
  return ""


def maybe_initialize(config: ml_collections.ConfigDict) -> bool:
  """Initialises the JAX distributed runtime when needed; returns whether it did.

  config.distributed: mode ("auto", "always", "never"), coordinator_address, num_processes, process_id
  (explicit values win over the environment), cpu_collectives ("gloo": CPU devices of several processes can
  all-reduce, as in the multi-process tests).
  """
  d = config.distributed
  explicit = d.num_processes > 1
  environment = _cluster_environment()
  if d.mode == "never" or (d.mode == "auto" and not explicit and not environment):
    return False
  if d.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", d.cpu_collectives)
  kwargs = {"heartbeat_timeout_seconds": d.heartbeat_timeout_seconds,
            "initialization_timeout": d.initialization_timeout_seconds,
            "shutdown_timeout_seconds": d.shutdown_timeout_seconds}
  if explicit:
    kwargs.update({"coordinator_address": d.coordinator_address, "num_processes": d.num_processes,
                   "process_id": d.process_id})
  jax.distributed.initialize(**kwargs)
  logging.info("JAX distributed runtime up (%s): process %d of %d, %d local / %d global devices.",
               "config" if explicit else environment or "auto-detected", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


EXIT_CODE = 69  # EX_UNAVAILABLE: another process of the run is gone; rerunning every process's command resumes.
_PEER_FAILURE_MARKERS = ("Connection closed by peer", "Connection reset by peer", "heartbeat timeout",
                         "stopped sending heartbeats", "tasks are unhealthy", "Gloo", "NCCL", "Barrier failed",
                         "coordination service")


def peer_failure(error: BaseException) -> Optional[str]:
  """The first line of `error` when it says that another process of a multi-process run died or hung (a
  collective's connection closed, the coordination service's heartbeat timeout); None for any other error."""
  text = str(error)
  if not any(marker in text for marker in _PEER_FAILURE_MARKERS):
    return None
  return text.strip().splitlines()[0][:300] if text.strip() else type(error).__name__
