#!/usr/bin/env bash
# Creates a TPU VM: one host (v5litepod-8, v6e-8, v5p-8) or a pod slice (v5p-32, v5litepod-16, ...).
#   tpu/create.sh NAME ZONE ACCELERATOR_TYPE [RUNTIME_VERSION]
# The runtime version defaults to the one Cloud TPU documents for the accelerator's generation.
# Set TPU_CREATE_FLAGS for extra flags, e.g. TPU_CREATE_FLAGS="--spot" or "--reserved".
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_args 3 "tpu/create.sh NAME ZONE ACCELERATOR_TYPE [RUNTIME_VERSION]" "$@"
name="$1" zone="$2" accelerator="$3"
case "$accelerator" in
  v4-*) default_version="tpu-ubuntu2204-base" ;;
  v5p-*) default_version="v2-alpha-tpuv5" ;;
  v5litepod-*) default_version="v2-alpha-tpuv5-lite" ;;
  v6e-*) default_version="v2-alpha-tpuv6e" ;;
  *) die "unknown accelerator type '$accelerator' (expected v4-N, v5p-N, v5litepod-N or v6e-N)" ;;
esac
version="${4:-$default_version}"
need_gcloud
read -r -a extra <<<"${TPU_CREATE_FLAGS:-}"
gcloud compute tpus tpu-vm create "$name" --zone="$zone" --accelerator-type="$accelerator" \
  --version="$version" "${extra[@]}"
gcloud compute tpus tpu-vm describe "$name" --zone="$zone" --format="value(state,acceleratorType)"
