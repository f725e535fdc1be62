#!/usr/bin/env bash
# The accelerator measurement of the performance issue: DeCLIP ViT-B/32 and ViT-B/16 at 224 px, bf16 compute,
# the largest per-device batch (of the list, tried largest first) that compiles and runs; one table row each
# from benchmarks/train_step.py (images/s, model TFLOP/s, MFU against the chip's dense bf16 peak, memory).
#
#   pip install "jax[cuda12]==0.10.2"   # or jax[tpu] on a TPU VM
#   bash benchmarks/gpu_train_step.sh "H100 SXM" [BATCH ...]     # chip names: declip_jax/flops.py PEAK_BF16_TFLOPS
#
# One device: one NN-queue buffer of the official per-GPU 65,536 slots; SimSiam BatchNorm over the official
# 128-image groups; the built-in data (the step, not the input pipeline, is timed). STEPS=N sets timed steps.
set -u
peak="${1:-H100 SXM}"
shift || true
batches="${*:-1024 768 512 384 256 128}"
for config in declip_vit_b32 declip_vit_b16; do
  for batch in $batches; do
    if python benchmarks/train_step.py --config="configs/${config}.py" --peak="${peak}" --steps="${STEPS:-10}" \
        --config.model.dtype=bfloat16 --config.train.batch_size="${batch}" --config.ssl.bn_group_size=128 \
        --config.nns.groups=1 --config.nns.group_size=65536 --config.data.source=builtin \
        --config.data.tokenizer=word --config.evals.zero_shot_imagenet.enabled=False; then
      break  # The largest batch that fits.
    fi
    echo "${config}: batch ${batch} did not run; trying the next smaller one" >&2
  done
done
