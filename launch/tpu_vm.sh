#!/usr/bin/env bash
# Cloud TPU VM (single host or pod slice): create, install, run the same command on every worker, delete.
#
#   launch/tpu_vm.sh [--dry-run] --name=NAME --zone=ZONE --accelerator=v4-32 ACTION [-- TRAIN_ARGS...]
#
# ACTION: create | setup (needs --repo=GIT_URL) | run | delete | all (create, setup, run). TRAIN_ARGS go to
# declip_jax.main, e.g.
#   launch/tpu_vm.sh --name=declip --zone=us-central2-b --accelerator=v4-32 --repo=GIT_URL all -- \
#     --config=configs/declip_vit_b32.py --workdir=gs://bucket/runs/b32 --config.data.tfrecord.files='gs://...'
# Every worker runs the same command; jax.distributed.initialize() finds the slice by itself
# (declip_jax/distributed.py). --dry-run prints each command instead of running it.
set -euo pipefail

DRY_RUN=0 NAME="" ZONE="" ACCELERATOR="" VERSION="tpu-ubuntu2204-base" REPO_URL="" ACTION=""
TRAIN_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --name=*) NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --accelerator=*) ACCELERATOR="${1#*=}" ;;
    --version=*) VERSION="${1#*=}" ;;
    --repo=*) REPO_URL="${1#*=}" ;;
    create|setup|run|delete|all) ACTION="$1" ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    *) echo "error: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$NAME" && -n "$ZONE" && -n "$ACTION" ]] || { echo "error: --name, --zone and an ACTION are required" >&2; exit 2; }

run() {  # Prints the command; runs it unless --dry-run.
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}

on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"
}

create() {
  [[ -n "$ACCELERATOR" ]] || { echo "error: create needs --accelerator (e.g. v4-32)" >&2; exit 2; }
  run gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$ACCELERATOR" --version="$VERSION"
}

setup() {
  [[ -n "$REPO_URL" ]] || { echo "error: setup needs --repo=<git URL of your declip_jax checkout>" >&2; exit 2; }
  on_all_workers "set -e; (test -d declip_jax || git clone $REPO_URL declip_jax); cd declip_jax && git pull --ff-only \
&& python3 -m venv ~/venv && ~/venv/bin/pip install -q -r requirements.txt 'jax[tpu]==0.10.2'"
}

train() {
  local args
  args=$(printf ' %q' "${TRAIN_ARGS[@]}")
  on_all_workers "cd declip_jax && ~/venv/bin/python -m declip_jax.main${args}"
}

delete() {
  run gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet
}

case "$ACTION" in
  create) create ;;
  setup) setup ;;
  run) train ;;
  delete) delete ;;
  all) create; setup; train ;;
esac
