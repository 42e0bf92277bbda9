#!/usr/bin/env bash
# Copies this repository (its committed files) to every worker and installs primejax with the TPU
# runtime (jax[tpu]) and gcsfs (checkpoints on gs://).
#   tpu/install.sh NAME ZONE
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_args 2 "tpu/install.sh NAME ZONE" "$@"
name="$1" zone="$2"
need_gcloud
repo="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
archive="$(mktemp -d)/primejax.tar.gz"
git -C "$repo" archive --format=tar.gz --output="$archive" HEAD
copy_to_workers "$name" "$zone" "$archive" "primejax.tar.gz"
on_workers "$name" "$zone" all "set -e; rm -rf ~/$PRIMEJAX_REMOTE_DIR; mkdir -p ~/$PRIMEJAX_REMOTE_DIR; \
tar -xzf ~/primejax.tar.gz -C ~/$PRIMEJAX_REMOTE_DIR; cd ~/$PRIMEJAX_REMOTE_DIR; \
python3 -m pip install --upgrade pip; python3 -m pip install -e '.[tpu]' gcsfs; \
python3 -c 'import jax; print(jax.process_index(), jax.local_devices())'"
