"""declip_jax: DeCLIP image-text pre-training and evaluation in JAX/Flax."""

__version__ = "0.1.0"
