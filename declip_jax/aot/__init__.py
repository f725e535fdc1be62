"""Ahead-of-time tools: will a config fit, and what does its step cost, on accelerators this machine does not have.

  python -m declip_jax.aot --config=configs/declip_vit_b32.py --target=gpu:a100-40:8

cli.py: the command line; ladder.py: compiles the train step for a target's devices and walks a ladder of cheaper
settings until it fits; targets.py: the devices of a CPU, TPU or GPU target; gpu_target.py and gpu_targets/: XLA's
GPU compiler without a GPU, from shipped target descriptions; flops.py: the model FLOPs of a step, for MFU and the
roofline.
"""
