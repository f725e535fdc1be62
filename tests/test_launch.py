"""Launch scripts: the TPU VM script's dry run prints the gcloud commands, with the training command on every
worker; the SLURM script parses; cluster detection reads the environment."""

import subprocess

import pytest

from declip_jax import distributed
from tests.conftest import REPO


def _tpu(*args):
  return subprocess.run(["bash", "launch/tpu_vm.sh", "--dry-run", *args], cwd=REPO, capture_output=True, text=True)


def test_tpu_vm_dry_run_prints_every_command():
  out = _tpu("--name=declip", "--zone=us-central2-b", "--accelerator=v4-32", "--repo=https://example.invalid/r.git",
             "all", "--", "--config=configs/declip_vit_b32.py", "--workdir=gs://bucket/run")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert len(lines) == 3 and all(line.startswith("+ gcloud compute tpus tpu-vm") for line in lines)
  assert "create declip" in lines[0] and "--accelerator-type=v4-32" in lines[0]
  assert all("--worker=all" in line for line in lines[1:])
  assert "declip_jax.main\\ --config=configs/declip_vit_b32.py\\ --workdir=gs://bucket/run" in lines[2]


@pytest.mark.parametrize("args, message", [(["run"], "--name, --zone"), (["--name=a", "--zone=b", "setup"], "--repo"),
                                           (["--bogus"], "unknown argument")])
def test_tpu_vm_bad_arguments_are_one_line(args, message):
  out = _tpu(*args)
  assert out.returncode == 2 and message in out.stderr and out.stdout == ""


def test_slurm_script_parses():
  assert subprocess.run(["bash", "-n", "launch/slurm.sbatch"], cwd=REPO).returncode == 0


@pytest.mark.parametrize("env, expected", [({"SLURM_NTASKS": "16"}, "SLURM"), ({"SLURM_NTASKS": "1"}, ""),
                                           ({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}, "multi-host TPU"),
                                           ({"TPU_WORKER_HOSTNAMES": "localhost"}, ""),
                                           ({"OMPI_COMM_WORLD_SIZE": "4"}, "Open MPI"), ({}, "")])
def test_cluster_detection(monkeypatch, env, expected):
  for key in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(key, raising=False)
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  assert distributed._cluster_environment() == expected  # pylint: disable=protected-access
