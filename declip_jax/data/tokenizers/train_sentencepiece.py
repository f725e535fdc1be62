"""Trains a SentencePiece model on the captions of TFRecord shards, with DeCLIP's special pieces:

  python -m declip_jax.data.tokenizers.train_sentencepiece --files='shards/*.tfrecord' --model_prefix=shards/sp \
      --vocab_size=32000 [--max_captions=2000000] [--caption_key=txt]

Writes `<model_prefix>.model` / `.vocab`; train with `--config.data.tokenizer=sentencepiece
--config.data.vocab_path=<model_prefix>.model --config.model.text.vocab_size=<vocab_size>`.
Ids: pad 0, unk 1, bos (= [SOT]) 2, eos (= [EOT]) 3, "<mask>" 4.
"""

import os
import tempfile

import sentencepiece as spm
import tensorflow as tf
from absl import app, flags

from declip_jax.data import record_stream
from declip_jax.data.tokenizers import sentencepiece_model

_FILES = flags.DEFINE_string("files", None, "Glob(s) of TFRecord shards.")
_MODEL_PREFIX = flags.DEFINE_string("model_prefix", None, "Output path without extension.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 32_000, "Pieces, special ones included.")
_MAX_CAPTIONS = flags.DEFINE_integer("max_captions", 2_000_000, "Captions read (in file order).")
_CAPTION_KEY = flags.DEFINE_string("caption_key", "txt", "Caption feature name.")
_MODEL_TYPE = flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe"], "SentencePiece algorithm.")


def captions(files: list[str], caption_key: str, limit: int):
  """Non-empty, cleaned captions of the shards, in file order."""
  features = {caption_key: tf.io.FixedLenFeature([], tf.string, default_value="")}
  ds = tf.data.TFRecordDataset(files).map(lambda r: record_stream.clean_caption(
      tf.io.parse_single_example(r, features)[caption_key], 1000)[0])
  for caption in ds.filter(lambda c: tf.strings.length(c) > 0).take(limit).as_numpy_iterator():
    yield caption.decode()


def train(files: list[str], model_prefix: str, vocab_size: int, max_captions: int, caption_key: str = "txt",
          model_type: str = "unigram") -> str:
  """Trains and returns the .model path."""
  with tempfile.TemporaryDirectory() as tmp:
    text = os.path.join(tmp, "captions.txt")
    with open(text, "w") as f:
      for caption in captions(files, caption_key, max_captions):
        f.write(caption.replace("\n", " ") + "\n")
    spm.SentencePieceTrainer.train(
        input=text, model_prefix=model_prefix, vocab_size=vocab_size, model_type=model_type, pad_id=0, unk_id=1,
        bos_id=2, eos_id=3, user_defined_symbols=[sentencepiece_model.MASK_PIECE], character_coverage=1.0,
        hard_vocab_limit=False, minloglevel=2)
  return model_prefix + ".model"


def main(argv):
  del argv
  path = train(record_stream.list_files(_FILES.value), _MODEL_PREFIX.value, _VOCAB_SIZE.value,
               _MAX_CAPTIONS.value, _CAPTION_KEY.value, _MODEL_TYPE.value)
  print(f"wrote {path}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["files", "model_prefix"])
  app.run(main)
