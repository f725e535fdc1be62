"""The id rows every tokenizer returns: [SOT] tokens [EOT] [PAD]... of a fixed length."""

import tensorflow as tf
import tensorflow_text as tf_text


def frame(ids: tf.RaggedTensor, sot_id: int, eot_id: int, pad_id: int, length: int) -> tf.Tensor:
  """Ragged [N, (tokens)] -> [N, length] int32: [SOT] tokens [EOT] [PAD]..., tokens cut so SOT and EOT survive."""
  ids = tf.cast(ids[:, : length - 2], tf.int32)
  n = ids.nrows()
  ids = tf.concat([tf.fill([n, 1], sot_id), ids, tf.fill([n, 1], eot_id)], axis=1)
  ids, _ = tf_text.pad_model_inputs(ids, max_seq_length=length, pad_value=pad_id)
  return tf.cast(ids, tf.int32)
