#!/usr/bin/env bash
# One node, all its GPUs: JAX sees every local GPU; mscm-jax builds a Mesh over
# them, shards the batch and replicates the parameters. Nothing else to set.
#
#   pip install -U "jax[cuda12]" && pip install -e .
#   launch/multi_gpu.sh mscm4x4-paper,q3 gs://my-bucket/runs/mscm4x4-paper-q3
#
# The global batch (config.train.batch_size) must divide by the GPU count.
set -euo pipefail
ARG=${1:?usage: $0 SCHEDULE,qQ[,mbt2018] WORKDIR [--config.x=y ...]}
WORKDIR=${2:?usage: $0 SCHEDULE,qQ[,mbt2018] WORKDIR [--config.x=y ...]}
shift 2
# Transforms in bfloat16 on GPUs; entropy models and rates stay float32.
exec mscm-jax train --config "launch/paper.py:${ARG}" --workdir "${WORKDIR}" \
  --config.model.compute_dtype=bfloat16 "$@"
