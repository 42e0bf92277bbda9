#!/usr/bin/env bash
# Starts `python -m primejax.train` on every worker at once, in the background; each worker logs to
# ~/primejax-train.log (process 0 writes the metrics, the others only their own progress).
#   tpu/launch.sh NAME ZONE CONFIG WORKDIR [--config.key=value ...]
# CONFIG and WORKDIR are paths on the workers, relative to ~/primejax (the repository) or absolute.
# On a multi-host slice every host writes its shards of each checkpoint: pass a directory they all
# see, --config.checkpoint.directory=gs://BUCKET/RUN.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_args 4 "tpu/launch.sh NAME ZONE CONFIG WORKDIR [--config.key=value ...]" "$@"
name="$1" zone="$2" config="$3" workdir="$4"
shift 4
need_gcloud
overrides=""
for flag in "$@"; do
  overrides+=" $(printf '%q' "$flag")"
done
on_workers "$name" "$zone" all "cd ~/$PRIMEJAX_REMOTE_DIR && nohup python3 -m primejax.train \
--config=$(printf '%q' "$config") --workdir=$(printf '%q' "$workdir") --config.mesh.distributed=on$overrides \
> ~/$PRIMEJAX_LOG 2>&1 < /dev/null & echo \"worker \$(hostname): started pid \$!\""
