"""data.*: the source, tokenizer, views and augmentation (docs/design.md §6). Each source's keys come from its
module in declip_jax/data/sources/ (the registry adds them): this section imports the data registry, and the
training core never imports it."""

import ml_collections

from declip_jax.config.config_error import require
from declip_jax.data import sources


def defaults() -> ml_collections.ConfigDict:
  """data.*: the source, tokenizer, views and augmentation (docs/design.md §6), and each source's keys."""
  data = ml_collections.ConfigDict()
  data.source = "tfrecord"  # The recipe trains on YFCC-15M shards; the demos and tests use "builtin".
  data.num_image_views = 2  # 1, 2, or 3 (SLIP: a base view for CLIP and two views for SimCLR).
  data.eda = True
  data.mask_captions = False  # MLM-mask the captions even without TSS (official FILIP).
  data.eval_crop_fraction = 0.875  # Eval: resize to size / 0.875 (256 for 224), centre crop to size.
  data.mean = (0.485, 0.456, 0.406)  # ImageNet statistics (official).
  data.std = (0.229, 0.224, 0.225)
  data.prefetch_batches = 2
  # "clip_bpe" (official: CLIP's byte-level BPE), "sentencepiece", or "word" (the demos' word list).
  data.tokenizer = "clip_bpe"
  # clip_bpe: OpenAI's merges file (bpe_simple_vocab_16e6.txt.gz); sentencepiece: a .model file; word: one word
  # per line (empty: the built-in dataset's vocabulary).
  data.vocab_path = ""
  data.token_layout = "declip"  # clip_bpe ids: "declip" (mask 49406, SOT 49407, EOT 49408) or "openai".
  data.bpe_num_merges = 48_894  # Merges of the file used (CLIP's); 0: all.
  data.synonyms_path = ""  # TSV "word<TAB>syn1|syn2"; empty: the built-in dataset's table.
  data.shuffle_window = 4096  # Streamed sources: records permuted together (memory: window x record size).
  data.max_caption_chars = 1000  # Longer captions are truncated (and counted).
  # Images whose header declares more pixels are skipped (and counted) before decoding: decompression bombs.
  # PIL's own default limit (Image.MAX_IMAGE_PIXELS): 89,478,485, about 9,459 x 9,459.
  data.max_image_pixels = 89_478_485
  # Streamed sources: skip and count images that do not decode (the decode then runs in a tf.py_function, whose
  # Python part is ~0.1 ms per image). False: decode in TF ops, ~25% more images/s per core, no Python per image,
  # but an undecodable image stops the run: for data already checked (e.g. by a first pass with True).
  data.skip_undecodable_images = True
  # Each source's keys, data.<kind> (data.tfrecord, data.webdataset, data.tfds, data.builtin, data.image_folder):
  # declared by its module in declip_jax/data/sources/.
  sources.add_config(data)
  # data.source "mixture": ("WEIGHT:tfrecord:GLOB", "WEIGHT:webdataset:GLOB", "WEIGHT:tfds:NAME/SPLIT", ...), see
  # declip_jax/data/mixture.py.
  data.mixture = ()
  data.augment = ml_collections.ConfigDict()
  data.augment.recipe = "moco_v2"  # "moco_v2" (DeCLIP) or "crop" (CLIP baseline: RandomResizedCrop only).
  data.augment.crop_scale = (0.2, 1.0)
  # "": the first view is augmented like the others; "crop": RandomResizedCrop(first_view_crop_scale) only (SLIP's
  # base view for the CLIP term, as the CLIP baseline's).
  data.augment.first_view = ""
  data.augment.first_view_crop_scale = (0.5, 1.0)
  data.augment.crop_ratio = (3 / 4, 4 / 3)
  data.augment.jitter_prob = 0.8
  data.augment.brightness = 0.4
  data.augment.contrast = 0.4
  data.augment.saturation = 0.4
  data.augment.hue = 0.1
  data.augment.grayscale_prob = 0.2
  data.augment.blur_prob = 0.5
  data.augment.blur_sigma = (0.1, 2.0)  # In pixels of a blur_reference_size image (official: 224).
  data.augment.blur_reference_size = 224  # Sigma scales with image_size / this, as the kernel size does.
  data.augment.blur_kernel_fraction = 0.1  # Kernel size = this x image size, made odd (23 at 224).
  data.augment.flip_prob = 0.5
  return data


def validate(c: ml_collections.ConfigDict) -> None:
  """data.*: the source's keys (data/sources/), the tokenizer and its token layout."""
  sources.validate(c, require)
  require(c.data.tokenizer in ("clip_bpe", "sentencepiece", "word"),
          f"data.tokenizer must be 'clip_bpe', 'sentencepiece' or 'word', got {c.data.tokenizer!r}.")
  require(c.data.tokenizer == "word" or bool(c.data.vocab_path),
          f"data.tokenizer {c.data.tokenizer!r} needs data.vocab_path ("
          + ("OpenAI's CLIP merges file, bpe_simple_vocab_16e6.txt.gz" if c.data.tokenizer == "clip_bpe" else
              "a SentencePiece .model; python -m declip_jax.data.tokenizers.train_sentencepiece trains one") + ").")
  require(c.data.token_layout in ("declip", "openai"),
          f"data.token_layout must be 'declip' or 'openai', got {c.data.token_layout!r}.")
  _validate_augment(c)


def _validate_augment(c: ml_collections.ConfigDict) -> None:
  """data.augment.*."""
  require(c.data.augment.recipe in ("moco_v2", "crop"),
          f"data.augment.recipe must be 'moco_v2' or 'crop', got {c.data.augment.recipe!r}.")
  require(c.data.augment.first_view in ("", "crop"),
          f"data.augment.first_view must be '' or 'crop', got {c.data.augment.first_view!r}.")
  for key in ("crop_scale", "crop_ratio", "blur_sigma", "first_view_crop_scale"):
    value = c.data.augment[key]
    require(len(value) == 2 and value[0] <= value[1],
            f"data.augment.{key} must be a (min, max) pair with min <= max, got {tuple(value)}.")
  for key in ("crop_scale", "first_view_crop_scale"):
    lo, hi = c.data.augment[key]
    require(0 < lo <= hi <= 1, f"data.augment.{key} must satisfy 0 < min <= max <= 1, got {(lo, hi)}.")
