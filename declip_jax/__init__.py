"""declip_jax: DeCLIP image-text pre-training and evaluation in JAX/Flax."""

from declip_jax import xla_workarounds

__version__ = "0.1.0"

xla_workarounds.apply()  # Before any entry point starts a JAX backend.


def load(path: str, step=None, batch_size: int = 256):
  """Loads a trained model's parameters from a workdir or checkpoint directory: see declip_jax.loading.load.

  Returns a LoadedModel with encode_image, encode_text, preprocess and zero_shot_classifier.
  """
  from declip_jax import loading  # pylint: disable=g-import-not-at-top  (keeps `import declip_jax` light)
  return loading.load(path, step, batch_size)
