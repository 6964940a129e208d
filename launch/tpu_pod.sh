#!/usr/bin/env bash
# A Cloud TPU VM pod slice: the same command on every worker; `--distributed`
# lets jax.distributed.initialize() discover the slice. Each host reads its own
# part of every global batch. WORKDIR must be a bucket (gs://...).
#
#   launch/tpu_pod.sh my-tpu us-central2-b mscm4x4-paper,q3 gs://my-bucket/runs/m44-q3
set -euo pipefail
TPU=${1:?usage: $0 TPU_NAME ZONE SCHEDULE,qQ[,mbt2018] gs://WORKDIR}
ZONE=${2:?}
ARG=${3:?}
WORKDIR=${4:?}
shift 4
EXTRA="$*"
REPO=${MSCM_JAX_REPO:?set MSCM_JAX_REPO to the git URL of this repository}
gcloud compute tpus tpu-vm ssh "${TPU}" --zone "${ZONE}" --worker=all --command "
  set -e
  [ -d ~/mscm-jax ] || git clone '${REPO}' ~/mscm-jax
  cd ~/mscm-jax
  pip install -U 'jax[tpu]' -e . >/dev/null
  mscm-jax train --distributed --config 'launch/paper.py:${ARG}' --workdir '${WORKDIR}' \
    --config.model.compute_dtype=bfloat16 --no-progress ${EXTRA}
"
