#!/usr/bin/env bash
# Stops the training processes on every worker; with --delete, also deletes the TPU VM.
# A run stopped here resumes from its last checkpoint when launched again with the same command.
#   tpu/stop.sh NAME ZONE [--delete]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_args 2 "tpu/stop.sh NAME ZONE [--delete]" "$@"
name="$1" zone="$2" delete="${3:-}"
[ -z "$delete" ] || [ "$delete" = "--delete" ] || die "unknown option '$delete' (expected --delete)"
need_gcloud
on_workers "$name" "$zone" all "pkill -INT -f 'python3 -m primejax.train' || true; sleep 10; \
pkill -KILL -f 'python3 -m primejax.train' || true"
if [ "$delete" = "--delete" ]; then
  gcloud compute tpus tpu-vm delete "$name" --zone="$zone" --quiet
fi
