#!/usr/bin/env bash
# Copies a config file, a data file or a directory (a checkpoint) to the same path on every worker.
#   tpu/copy.sh NAME ZONE LOCAL_PATH REMOTE_PATH
# REMOTE_PATH is relative to the workers' home directory (e.g. data/train.parquet). For checkpoints
# of many GB a gs:// bucket read by every worker is faster than copying.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_args 4 "tpu/copy.sh NAME ZONE LOCAL_PATH REMOTE_PATH" "$@"
name="$1" zone="$2" local_path="$3" remote_path="$4"
[ -e "$local_path" ] || die "no such file or directory: $local_path"
need_gcloud
on_workers "$name" "$zone" all "mkdir -p \"\$(dirname ~/$remote_path)\""
copy_to_workers "$name" "$zone" "$local_path" "$remote_path"
