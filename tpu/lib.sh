#!/usr/bin/env bash
# Shared by the tpu/ scripts: argument checks and running a command on every worker of a TPU VM.
# Source it; it does nothing on its own.

# The repository on the workers, relative to the login user's home.
PRIMEJAX_REMOTE_DIR="${PRIMEJAX_REMOTE_DIR:-primejax}"
# The training log on every worker.
PRIMEJAX_LOG="${PRIMEJAX_LOG:-primejax-train.log}"

die() {
  echo "error: $*" >&2
  exit 2
}

need_args() {
  # need_args COUNT "USAGE" "$@": exits with the usage line unless at least COUNT arguments follow.
  local count="$1" usage="$2"
  shift 2
  if [ "$#" -lt "$count" ]; then
    echo "usage: $usage" >&2
    exit 2
  fi
}

need_gcloud() {
  command -v gcloud >/dev/null 2>&1 || die "gcloud is not installed (https://cloud.google.com/sdk/docs/install)"
}

on_workers() {
  # on_workers NAME ZONE WORKER COMMAND: runs COMMAND over ssh on WORKER ("all" or an index).
  local name="$1" zone="$2" worker="$3" command="$4"
  gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker="$worker" --command="$command"
}

copy_to_workers() {
  # copy_to_workers NAME ZONE LOCAL_PATH REMOTE_PATH: copies a file or directory to every worker.
  local name="$1" zone="$2" local_path="$3" remote_path="$4"
  gcloud compute tpus tpu-vm scp --recurse --zone="$zone" --worker=all "$local_path" "$name:$remote_path"
}
