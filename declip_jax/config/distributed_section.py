"""distributed.*: starting several processes (docs/design.md §5); checked before the runtime starts."""

import ml_collections

from declip_jax.config.config_error import require


def defaults() -> ml_collections.ConfigDict:
  """distributed.*: starting several processes (docs/design.md §5)."""
  distributed = ml_collections.ConfigDict()
  distributed.mode = "auto"  # "auto": when num_processes > 1 or SLURM/TPU/MPI says so; "always"; "never".
  distributed.coordinator_address = ""  # host:port of process 0; empty: from the environment.
  distributed.num_processes = 0  # 0: from the environment.
  distributed.process_id = -1
  distributed.cpu_collectives = "gloo"  # Collectives between CPU devices of different processes.
  # JAX's coordination service: a process whose heartbeat is missing this long is declared dead and every other
  # process stops (instead of waiting in a collective forever); start-up waits this long for all processes;
  # shutdown waits this long for the others to finish (docs/reliability.md). JAX's defaults.
  distributed.heartbeat_timeout_seconds = 100
  distributed.initialization_timeout_seconds = 300
  distributed.shutdown_timeout_seconds = 300
  return distributed


def validate(c: ml_collections.ConfigDict) -> None:
  """The distributed.* keys (checked before the runtime starts, i.e. before the rest of validate can run)."""
  d = c.distributed
  require(d.mode in ("auto", "always", "never"),
          f"distributed.mode must be 'auto', 'always' or 'never', got {d.mode!r}.")
  if d.num_processes > 1:
    require(bool(d.coordinator_address) and 0 <= d.process_id < d.num_processes,
            "distributed.num_processes > 1 needs distributed.coordinator_address (host:port) and a "
            "distributed.process_id in [0, num_processes).")
