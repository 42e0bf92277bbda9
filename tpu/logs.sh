#!/usr/bin/env bash
# Follows the training log of one worker (default 0, the one that writes the metrics).
#   tpu/logs.sh NAME ZONE [WORKER]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_args 2 "tpu/logs.sh NAME ZONE [WORKER]" "$@"
name="$1" zone="$2" worker="${3:-0}"
need_gcloud
on_workers "$name" "$zone" "$worker" "tail -n 100 -F ~/$PRIMEJAX_LOG"
