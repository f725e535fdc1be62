"""Ahead-of-time tools: will a config fit, and what does its step cost, on accelerators this machine does not have.

  python -m declip_jax.aot --config=configs/declip_vit_b32.py --target=gpu:a100-40:8

ladder.py: compiles the train step for a CPU, TPU or GPU target and walks a ladder of cheaper settings until it
fits (the command line); gpu_target.py and gpu_targets/: XLA's GPU compiler without a GPU, from shipped target
descriptions; flops.py: the model FLOPs of a step, for MFU and the roofline.
"""
