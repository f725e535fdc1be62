"""checkpoint.*: how often, how many kept, asynchronous saves, the workdir lock and the preemption grace."""

import ml_collections

from declip_jax.config.config_error import require


def defaults() -> ml_collections.ConfigDict:
  """checkpoint.*: how often, how many kept, asynchronous saves."""
  checkpoint = ml_collections.ConfigDict()
  checkpoint.every_steps = 1000
  checkpoint.keep = 3
  checkpoint.async_save = True
  # One run per workdir (training/workdir_lock.py): <workdir>/run.lock names the holder and is refreshed every
  # lock_heartbeat_seconds; another host's lock whose heartbeat is older than lock_stale_seconds is taken over
  # (on the same host: when its pid is gone). False: no lock (e.g. a filesystem without exclusive create).
  checkpoint.lock = True
  checkpoint.lock_heartbeat_seconds = 30.0
  checkpoint.lock_stale_seconds = 300.0
  # The time a platform allows between a stop notice (SIGTERM) and the kill: 30 s on GCE spot/preemptible VMs and
  # Kubernetes' default terminationGracePeriodSeconds. A stop finishes the step in flight, writes the checkpoint of
  # the step reached and exits; the run times its first checkpoint write and warns when a stop would take longer
  # than this (docs/reliability.md, "Preemption"). 0: no check.
  checkpoint.preemption_grace_seconds = 30.0
  return checkpoint


def validate(c: ml_collections.ConfigDict) -> None:
  """checkpoint.*."""
  for key in ("every_steps", "keep", "lock_heartbeat_seconds", "lock_stale_seconds"):
    require(c.checkpoint[key] > 0, f"checkpoint.{key} must be positive, got {c.checkpoint[key]}.")
  grace = c.checkpoint.preemption_grace_seconds
  require(grace >= 0, f"checkpoint.preemption_grace_seconds must be >= 0 (0: no check), got {grace}.")
