"""Input pipeline: tokenizer layout, MLM rates, EDA ops, image views, determinism, resume and host slicing."""

import numpy as np
import pytest
import tensorflow as tf

from declip_jax import builtin_vocabulary
from declip_jax.data import shapes, image_views, pipeline, text_views, tokenizers
from declip_jax.data.tokenizers import word


@pytest.fixture
def tokenizer():
  return word.WordTokenizer(["a", "red", "circle", "on", "the", "left"], context_length=6)


def test_word_tokenizer_layout_and_truncation(tokenizer):
  assert (tokenizer.pad_id, tokenizer.unk_id) == (0, 1)
  assert (tokenizer.mask_id, tokenizer.sot_id, tokenizer.eot_id, tokenizer.vocab_size) == (8, 9, 10, 11)
  ids = tokenizer.tokenize_numpy(["A red circle!", "a RED blob on the left"])
  np.testing.assert_array_equal(ids[0], [9, 2, 3, 4, 10, 0])
  np.testing.assert_array_equal(ids[1], [9, 2, 3, 1, 5, 10])  # Truncated, SOT and EOT kept; unknown -> 1.
  assert tokenizer.tokenize(tf.constant("red")).numpy().tolist() == [9, 3, 10, 0, 0, 0]


def test_mlm_rates_and_specials_untouched():
  vocab, mask_id, specials = 50, 47, (0, 47, 48, 49)
  tokens = tf.constant([48] + list(range(2, 40)) + [49] + [0] * 10, tf.int32)
  counts = {"chosen": 0, "mask": 0, "random_or_same": 0, "same": 0, "eligible": 0}
  for i in range(400):
    masked, labels = text_views.mlm_mask(tokens, tf.constant([7, i], tf.int64), specials, mask_id, vocab)
    masked, labels, t = masked.numpy(), labels.numpy(), tokens.numpy()
    chosen = labels != text_views.IGNORE_LABEL
    assert not np.any(chosen & np.isin(t, specials))
    np.testing.assert_array_equal(masked[~chosen], t[~chosen])
    np.testing.assert_array_equal(labels[chosen], t[chosen])
    counts["eligible"] += 38
    counts["chosen"] += chosen.sum()
    counts["mask"] += (masked[chosen] == mask_id).sum()
    counts["same"] += (masked[chosen] == t[chosen]).sum()
  assert counts["chosen"] / counts["eligible"] == pytest.approx(0.15, abs=0.01)
  assert counts["mask"] / counts["chosen"] == pytest.approx(0.8, abs=0.03)
  # Unchanged: the 10% kept plus random draws that hit the same id (1/50 of the 10% random).
  assert counts["same"] / counts["chosen"] == pytest.approx(0.1 + 0.1 / 50, abs=0.025)


def test_eda_ops():
  words = tf.constant(["a", "big", "red", "circle"])
  swapped = text_views.random_swap(words, tf.constant([1, 2], tf.int64)).numpy()
  assert sorted(swapped) == sorted(words.numpy()) and sum(swapped != words.numpy()) == 2
  table = text_views.synonym_table({"big": ("large",)})
  replaced = text_views.synonym_replacement(words, tf.constant([3, 4], tf.int64), table).numpy().tolist()
  assert replaced == [b"a", b"large", b"red", b"circle"]
  none = text_views.synonym_replacement(tf.constant(["red"]), tf.constant([3, 4], tf.int64), table)
  assert none.numpy().tolist() == [b"red"]
  kept = [text_views.random_deletion(words, tf.constant([5, i], tf.int64), p=0.1).numpy().size for i in range(300)]
  assert np.mean(kept) == pytest.approx(3.6, abs=0.15) and min(kept) >= 1
  all_gone = text_views.random_deletion(words, tf.constant([5, 0], tf.int64), p=1.0).numpy()
  assert all_gone.size == 1
  seen = {text_views.eda(tf.constant("a big red circle"), tf.constant([9, i], tf.int64), table).numpy()
          for i in range(60)}
  assert b"a large red circle" in seen and len(seen) > 3


def _torchvision_crop_areas(rng, height, width, scale, ratio, n):
  """NumPy transcription of torchvision RandomResizedCrop.get_params, returning crop area fractions."""
  areas = []
  for _ in range(n):
    for _ in range(10):
      target = rng.uniform(*scale) * height * width
      aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
      w, h = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
      if 0 < w <= width and 0 < h <= height:
        areas.append(h * w / (height * width))
        break
    else:
      areas.append(1.0)
  return np.asarray(areas)


def test_crop_window_scale_and_ratio_match_torchvision():
  areas, ratios = [], []
  for i in range(400):
    top, left, h, w = image_views.crop_window(tf.constant([1, i], tf.int64), 100, 120, (0.2, 1.0)).numpy()
    assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 120
    areas.append(h * w / 12000)
    ratios.append(w / h)
  reference = _torchvision_crop_areas(np.random.default_rng(0), 100, 120, (0.2, 1.0), (3 / 4, 4 / 3), 20000)
  assert 0.19 <= min(areas) and max(areas) <= 1.0
  assert np.mean(areas) == pytest.approx(reference.mean(), abs=0.03)
  assert min(ratios) >= 0.74 and max(ratios) <= 1.35


def test_train_view_is_deterministic_and_random_per_seed(config):
  image = tf.constant(shapes.generate(1, 32, 0, "train").images[0])
  aug = config.data.augment
  a = image_views.train_view(image, tf.constant([1, 2], tf.int64), 16, aug).numpy()
  b = image_views.train_view(image, tf.constant([1, 2], tf.int64), 16, aug).numpy()
  c = image_views.train_view(image, tf.constant([1, 3], tf.int64), 16, aug).numpy()
  assert a.shape == (16, 16, 3) and a.min() >= 0 and a.max() <= 1
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_flip_and_grayscale_rates(config):
  aug = config.data.augment
  aug.jitter_prob, aug.blur_prob, aug.crop_scale = 0.0, 0.0, (1.0, 1.0)
  aug.crop_ratio = (1.0, 1.0)
  image = np.zeros((8, 8, 3), np.uint8)
  image[:, :4, 0] = 255  # Red left half.
  flips = grays = 0
  n = 400
  for i in range(n):
    view = image_views.train_view(tf.constant(image), tf.constant([4, i], tf.int64), 8, aug).numpy()
    flips += view[:, 4:].mean() > view[:, :4].mean()  # The bright half moved right.
    grays += np.allclose(view[..., 0], view[..., 1], atol=1e-3)
  assert flips / n == pytest.approx(0.5, abs=0.07)
  assert grays / n == pytest.approx(0.2, abs=0.05)


def test_eval_view_resizes_and_centre_crops():
  image = tf.zeros((40, 60, 3), tf.uint8)
  assert image_views.eval_view(image, 16, 0.875).shape == (16, 16, 3)


@pytest.mark.parametrize("hw, resized", [((192, 256), (224, 298)), ((255, 201), (284, 224)),
                                         ((200, 267), (224, 299)), ((224, 224), (224, 224))])
def test_eval_view_sizes_and_offsets_are_torchvisions(hw, resized):
  """As torchvision's Resize + CenterCrop (OpenAI's, open_clip's and CLIP_benchmark's preprocessing): the longer
  side truncated (256 * 224 / 192 = 298.7 -> 298), the crop offset rounded half to even ((299 - 224) / 2 -> 38)."""
  image = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
  expected = tf.image.resize(tf.image.convert_image_dtype(image, tf.float32), resized, "bicubic", antialias=True)
  top, left = round((resized[0] - 224) / 2), round((resized[1] - 224) / 2)  # Python's round: half to even.
  expected = np.clip(expected[top:top + 224, left:left + 224], 0.0, 1.0)
  np.testing.assert_array_equal(image_views.eval_view(tf.constant(image), 224, 1.0).numpy(), expected)


def _take(config, start_step, n, process_index=0, process_count=1):
  tok = tokenizers.build(config)
  ds = pipeline.train_dataset(config, tok, start_step, process_index, process_count)
  return [b for _, b in zip(range(n), pipeline.numpy_batches(ds))]


def test_pipeline_batches_have_the_documented_keys(config):
  (batch,) = _take(config, 0, 1)
  b, s, length = config.train.batch_size, config.model.image.image_size, config.model.text.context_length
  assert batch["img1"].shape == batch["img2"].shape == (b, s, s, 3)
  assert batch["text_mlm"].shape == batch["text_eda"].shape == batch["mlm_labels"].shape == (b, length)
  assert not np.array_equal(batch["img1"], batch["img2"])


def test_resumed_pipeline_sees_the_same_batches(config):
  straight = _take(config, 0, 4)
  resumed = _take(config, 2, 2)
  for a, b in zip(straight[2:], resumed):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_processes_build_disjoint_slices_of_the_global_batch(config):
  (whole,) = _take(config, 1, 1)
  halves = [_take(config, 1, 1, process_index=p, process_count=2)[0] for p in range(2)]
  for k in whole:
    np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), whole[k])


def test_every_example_appears_once_per_epoch():
  n = 48
  first = [int(pipeline.example_index(p, n, seed=7)) for p in range(n)]
  second = [int(pipeline.example_index(p, n, seed=7)) for p in range(n, 2 * n)]
  assert sorted(first) == sorted(second) == list(range(n))
  assert first != second and first != list(range(n))
  positions = list(pipeline.example_positions(2, 16, 1, 2).take(10).as_numpy_iterator())
  assert positions == [40, 41, 42, 43, 44, 45, 46, 47, 56, 57]  # Step 2, rows 8-15; then step 3.


def test_builtin_dataset_is_deterministic_and_has_vocabulary_coverage():
  a, b = shapes.generate(50, 16, 3, "train"), shapes.generate(50, 16, 3, "train")
  np.testing.assert_array_equal(a.images, b.images)
  test = shapes.generate(50, 16, 3, "test")
  assert not np.array_equal(a.images, test.images)
  tok = word.WordTokenizer(builtin_vocabulary.vocabulary(), 24)
  prompts = [t.format(s) for a, ts in builtin_vocabulary.ZERO_SHOT_TEMPLATES.items() for t in ts
             for s in shapes.ATTRIBUTES[a]]
  ids = tok.tokenize_numpy(list(a.captions) + prompts)
  assert not np.any(ids == tok.unk_id)
  assert set(a.labels.tolist()) <= set(range(len(shapes.SHAPES)))


def test_wordnet_synonyms_from_an_installed_corpus(monkeypatch):
  """With nltk's wordnet importable, single-word lemmas map to their single-word synonyms; without it, {}."""
  import sys  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  synsets = {"car": [["car", "auto", "motor_car"], ["car", "railcar"]], "auto": [["car", "auto"]],
             "motor_car": [["car", "motor_car"]], "railcar": [["car", "railcar"]], "red": [["red"]]}
  wordnet = types.SimpleNamespace(
      all_lemma_names=lambda: iter(synsets),
      synsets=lambda w: [types.SimpleNamespace(lemma_names=lambda names=names: names) for names in synsets[w]])
  corpus = types.ModuleType("nltk.corpus")
  corpus.wordnet = wordnet
  monkeypatch.setitem(sys.modules, "nltk", types.ModuleType("nltk"))
  monkeypatch.setitem(sys.modules, "nltk.corpus", corpus)
  assert text_views.wordnet_synonyms() == {"car": ("auto", "railcar"), "auto": ("car",), "railcar": ("car",)}
