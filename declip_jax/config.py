"""The full DeCLIP recipe as a ConfigDict, and its validation.

`base_config()` holds every key with the official default (Sense-GVT/DeCLIP, YFCC-15M, ViT-B/32; see
docs/design.md). Files in `configs/` start from it and change what their experiment changes. `validate()` rejects
inconsistent settings with an error that names the keys involved.
"""

import math

import ml_collections

from declip_jax import templates
from declip_jax.data import sources

LOSS_TERMS = ("clip_mvs", "iss", "tss", "nns", "simclr", "filip")
REMAT_POLICIES = ("none", "full", "save_dots")  # model.image.remat / model.text.remat (models/layers.py).


class ConfigError(ValueError):
  """A config value is invalid; the message names the key(s) and what to do."""


def base_config() -> ml_collections.ConfigDict:
  """Returns the official DeCLIP ViT-B/32 recipe with every key the code reads."""
  c = ml_collections.ConfigDict()
  c.train = _train_section()
  c.checkpoint = _checkpoint_section()
  c.eval = _eval_section()
  # Named evaluations (see eval_spec), run every evals.<name>.every_steps, at the end of training, and all of
  # them with --mode=eval; results in TensorBoard (eval/<name>/<metric>) and <workdir>/eval_results.json.
  c.evals = ml_collections.ConfigDict({"retrieval": eval_spec("retrieval", "heldout")})
  c.mesh = _mesh_section()
  # Several processes (TPU pod slices, multi-node GPU): see declip_jax/distributed.py.
  c.distributed = _distributed_section()
  c.model = _model_section()
  c.loss = _loss_section()
  c.ssl = _ssl_section()
  c.mlm = _mlm_section()
  c.nns = _nns_section()
  c.optim = _optim_section()
  c.data = _data_section()
  return c


def _train_section() -> ml_collections.ConfigDict:
  """train.*: the schedule's length, the global batch, the seed, logging, and loss-spike recovery."""
  train = ml_collections.ConfigDict()
  train.num_steps = 128_001
  train.batch_size = 4096  # Global: 128 per GPU x 32 GPUs (official).
  train.seed = 0
  train.log_every_steps = 100
  # Exact gradient accumulation (docs/design.md §17): each device's batch runs through the towers in this many
  # micro-batches (activation memory / accum_steps, the towers' forward run twice); the losses still see the
  # whole global batch, so the update equals the unaccumulated one. 1: off.
  train.accum_steps = 1
  # Official loss-spike recovery (docs/design.md §8): on a spike or a non-finite streak, restore a checkpoint at least
  # min_steps_back steps old and multiply the learning rate by lr_factor; give up after max_rollbacks.
  train.recovery = ml_collections.ConfigDict()
  train.recovery.spike_window = 100  # Running mean over the last this many finite losses.
  train.recovery.spike_threshold = 10.0  # Additive; float("inf") turns spike detection off.
  # Official: the first NaN rolls back. Here a non-finite step is skipped (the state does not change), so a
  # single bad batch costs one batch, and only a streak this long (a diverged model) rolls back.
  train.recovery.max_consecutive_nonfinite = 5
  train.recovery.min_steps_back = 600  # Official: reload from 600-800 steps back.
  train.recovery.lr_factor = 0.997
  train.recovery.max_rollbacks = 5  # Then abort with the cause; 0 aborts at the first trigger.
  return train


def _checkpoint_section() -> ml_collections.ConfigDict:
  """checkpoint.*: how often, how many kept, asynchronous saves."""
  checkpoint = ml_collections.ConfigDict()
  checkpoint.every_steps = 1000
  checkpoint.keep = 3
  checkpoint.async_save = True
  # One run per workdir (training/workdir_lock.py): <workdir>/run.lock names the holder and is refreshed every
  # lock_heartbeat_seconds; another host's lock whose heartbeat is older than lock_stale_seconds is taken over
  # (on the same host: when its pid is gone). False: no lock (e.g. a filesystem without exclusive create).
  checkpoint.lock = True
  checkpoint.lock_heartbeat_seconds = 30.0
  checkpoint.lock_stale_seconds = 300.0
  # The time a platform allows between a stop notice (SIGTERM) and the kill: 30 s on GCE spot/preemptible VMs and
  # Kubernetes' default terminationGracePeriodSeconds. A stop finishes the step in flight, writes the checkpoint of
  # the step reached and exits; the run times its first checkpoint write and warns when a stop would take longer
  # than this (docs/reliability.md, "Preemption"). 0: no check.
  checkpoint.preemption_grace_seconds = 30.0
  return checkpoint


def _eval_section() -> ml_collections.ConfigDict:
  """eval.*: the default period and batch of the named evaluations (config.evals)."""
  eval_ = ml_collections.ConfigDict()
  eval_.every_steps = 5000  # The period of every evaluation whose evals.<name>.every_steps is 0.
  eval_.batch_size = 256  # Global, split over the mesh's batch axes.
  return eval_


def _mesh_section() -> ml_collections.ConfigDict:
  """mesh.*: the device mesh ("data", "fsdp", "model") and which arrays FSDP splits."""
  mesh = ml_collections.ConfigDict()
  mesh.shape = (-1, 1, 1)  # Sizes of axes ("data", "fsdp", "model"); -1 fills with the remaining devices.
  mesh.fsdp_min_size = 2**20  # Parameters/optimizer moments with this many elements are split over "fsdp".
  return mesh


def _distributed_section() -> ml_collections.ConfigDict:
  """distributed.*: starting several processes (docs/design.md §5)."""
  distributed = ml_collections.ConfigDict()
  distributed.mode = "auto"  # "auto": when num_processes > 1 or SLURM/TPU/MPI says so; "always"; "never".
  distributed.coordinator_address = ""  # host:port of process 0; empty: from the environment.
  distributed.num_processes = 0  # 0: from the environment.
  distributed.process_id = -1
  distributed.cpu_collectives = "gloo"  # Collectives between CPU devices of different processes.
  # JAX's coordination service: a process whose heartbeat is missing this long is declared dead and every other
  # process stops (instead of waiting in a collective forever); start-up waits this long for all processes;
  # shutdown waits this long for the others to finish (docs/reliability.md). JAX's defaults.
  distributed.heartbeat_timeout_seconds = 100
  distributed.initialization_timeout_seconds = 300
  distributed.shutdown_timeout_seconds = 300
  return distributed


def _model_section() -> ml_collections.ConfigDict:
  """model.*: the towers, their heads and the logit scales (the recipe's ViT-B/32; presets.py has others)."""
  model = ml_collections.ConfigDict()
  model.embed_dim = 512
  model.dtype = "float32"  # Compute dtype; parameters and optimizer state stay float32.
  model.scan_layers = True
  # Blocks per iteration of a scanned tower's loop; 0 (or the layer count): no loop, the parameters still stacked.
  # A loop compiles one block, but zero-fills its stacked residuals and keeps more of them (docs/design.md §21:
  # ViT-B/32 DeCLIP at 128 per H100, 33.4 GiB with the loop, 22.1 without).
  model.scan_unroll = 0
  # The two image views (ViT towers; a ResNet's BatchNorm keeps one call per view) and the two text views run
  # as one tower call each on twice the rows: the same function, larger matmuls.
  model.batch_views = True
  # jax.nn.dot_product_attention's implementation: "" (JAX chooses), "xla", or "cudnn" (NVIDIA GPUs, bf16/fp16).
  model.attention_implementation = ""
  model.image = ml_collections.ConfigDict()
  model.image.arch = "vit"  # "vit" or "resnet" (CLIP's ModifiedResNet); set_architecture picks both.
  model.image.image_size = 224
  model.image.patch_size = 32
  model.image.width = 768
  model.image.layers = 12
  model.image.heads = 12
  model.image.freeze_patch_embed = True  # Official: the ViT patch embedding stays at its random init.
  # Rematerialisation per tower and layer/Bottleneck: "none", "full" (recompute all in the backward pass) or
  # "save_dots" (keep matmul outputs, recompute the element-wise work).
  model.image.remat = "none"
  # FLIP's patch masking (ViT only, docs/design.md §18): each training image view keeps round((1 - mask_ratio) x
  # patches) of its patches, chosen per example from the step's RNG; evaluation never masks. The last
  # unmasked_final_fraction of train.num_steps trains unmasked (FLIP's unmasked tuning). 0: off.
  model.image.mask_ratio = 0.0
  model.image.unmasked_final_fraction = 0.0
  # ResNet towers only (width = stem width, heads = attention-pool heads): Bottlenecks per stage, and BatchNorm
  # statistics over groups of this many examples per view (official RN50: SyncBN over 32 GPUs x 128 images).
  model.image.resnet_layers = (3, 4, 6, 3)
  model.image.bn_group_size = 4096
  model.image.bn_momentum = 0.9  # flax convention; = PyTorch momentum 0.1.
  model.image.bn_epsilon = 1e-5
  model.text = ml_collections.ConfigDict()
  model.text.context_length = 77
  model.text.vocab_size = 49_409  # `declip` layout: 49,408 BPE tokens + [MASK].
  model.text.width = 512
  model.text.layers = 12
  model.text.heads = 8
  model.text.projection_bias = True  # Official DeCLIP text projection is a Linear with bias.
  model.text.remat = "none"  # As model.image.remat.
  model.logit_scale = ml_collections.ConfigDict()
  model.logit_scale.init = math.log(1 / 0.07)
  model.logit_scale.min = 3.0  # Official: s clamped to [3, 6] before and after each update.
  model.logit_scale.max = 6.0  # open_clip instead: min 0, max ln(100).
  model.logit_scale.cap = 100.0  # Forward uses min(exp(s), cap) with a straight-through gradient.
  # loss.contrastive "sigmoid" only: the learned bias b of SigLIP's logits t x.y + b (paper: initialised at -10;
  # the temperature t is exp(logit_scale), initialised at log 10 by presets.use_sigmoid).
  model.logit_bias_init = -10.0
  # SLIP's SimCLR head on the image tower's pre-projection feature (loss.weights.simclr > 0).
  model.simclr = ml_collections.ConfigDict()
  model.simclr.hidden_dim = 4096
  model.simclr.out_dim = 256
  # FILIP's token-wise term (loss.weights.filip > 0): per-token mappings to `dim`, top_k tokens per side and pair,
  # its own learnable log-scale (official: init ln(1/0.07), clamped to [3, 6], no cap on exp).
  model.filip = ml_collections.ConfigDict()
  model.filip.dim = 256
  model.filip.top_k = 16
  model.filip.mask_padding = False  # Official: padding positions count; True: the FILIP paper's masking.
  model.filip.logit_scale = ml_collections.ConfigDict()
  model.filip.logit_scale.init = math.log(1 / 0.07)
  model.filip.logit_scale.min = 3.0
  model.filip.logit_scale.max = 6.0
  return model


def _loss_section() -> ml_collections.ConfigDict:
  """loss.*: every term's weight (official DeCLIP: 0.4 / 0.2 / 0.2 / 0.2) and how the terms are computed."""
  loss = ml_collections.ConfigDict()
  loss.weights = ml_collections.ConfigDict()
  loss.weights.clip_mvs = 0.4
  loss.weights.iss = 0.2
  loss.weights.tss = 0.2
  loss.weights.nns = 0.2
  loss.weights.mvs = 0.2  # Only read when mvs_mode == "paper".
  loss.weights.simclr = 0.0  # SLIP: 1.0 (with clip_mvs 1.0).
  loss.weights.filip = 0.0  # FILIP: 1.0 (clip_mvs 0); DeFILIP: 0.2.
  # "official": clip_mvs = mean of InfoNCE over all (image view, text view) pairs.
  # "paper": weights.clip_mvs * InfoNCE(img1, text_mlm) + weights.mvs * mean(the other pairs).
  loss.mvs_mode = "official"
  # The image-text terms' form (clip_mvs and nns): "softmax", InfoNCE over the global batch (CLIP, DeCLIP), or
  # "sigmoid", SigLIP's independent binary term per (image, text) pair (losses/sigmoid.py; docs/design.md §19),
  # computed around a ring of devices ("ring") or on gathered texts ("gathered", chunked by contrastive_chunk_size).
  loss.contrastive = "softmax"
  loss.sigmoid_implementation = "ring"
  loss.text_norm_eps = 1e-10  # Official: text embeddings are normalised with +1e-10 in the norm.
  # InfoNCE scores this many gathered columns at a time (0: all B_global at once). Same value and gradient;
  # per-device logits memory B_local x chunk instead of B_local x B_global (e.g. for B_global = 32k).
  loss.contrastive_chunk_size = 0
  loss.simclr_temperature = 0.1  # Official SLIP: fixed.
  # FILIP: gathered pairs scored per block (0: all at once). Memory per device b x tokens x chunk x top_k.
  loss.filip_chunk_size = 256
  return loss


def _ssl_section() -> ml_collections.ConfigDict:
  """ssl.*: SimSiam's projector, predictor and BatchNorm groups (docs/design.md §2)."""
  ssl = ml_collections.ConfigDict()
  ssl.bn_group_size = 128  # BatchNorm statistics over groups of this many examples (official per-GPU batch).
  ssl.projector_dim = 1024
  ssl.predictor_hidden_dim = 512
  ssl.bn_momentum = 0.9  # flax convention; = PyTorch momentum 0.1.
  ssl.bn_epsilon = 1e-5
  return ssl


def _mlm_section() -> ml_collections.ConfigDict:
  """mlm.*: masked language modelling's masking rates (official: BERT's)."""
  mlm = ml_collections.ConfigDict()
  mlm.mask_prob = 0.15
  mlm.mask_token_frac = 0.8
  mlm.random_token_frac = 0.1  # Random ids from the whole vocabulary (official).
  # Vocabulary logits only at each caption's first this-many chosen positions (0: at all positions). A batch
  # with a longer row takes the all-positions path, so the loss is the same. 15% masking chooses more than 24
  # positions of a full 77-token caption with probability 6e-5, of a 38-token one 2e-12. Speed only.
  mlm.max_predictions = 24
  return mlm


def _nns_section() -> ml_collections.ConfigDict:
  """nns.*: the nearest-neighbour queue (docs/design.md §3)."""
  nns = ml_collections.ConfigDict()
  nns.groups = 32  # Official: one queue per GPU, 32 GPUs.
  nns.group_size = 65_536
  # A buffer holds the last group_size / (1 + data.eda) pairs of its slice. On data with fewer than ~10x that
  # many pairs, lookups often find the pair's own caption from an earlier epoch and NNS repeats the CLIP term
  # (nn_queue.own_pair_fraction; training warns for built-in data). Small data: a smaller group_size.
  nns.search = "local"  # "local": own group's buffer (official); "global": all buffers.
  nns.chunk_size = 8192  # Queue slots scored at once in the lookup.
  return nns


def _optim_section() -> ml_collections.ConfigDict:
  """optim.*: AdamW and the learning-rate schedule (official; docs/design.md §8)."""
  optim = ml_collections.ConfigDict()
  optim.lr = 1e-3
  optim.warmup_init_lr = 1e-4
  optim.warmup_steps = 2500
  optim.schedule_steps = 128_001  # The cosine reaches 0 here.
  optim.b1 = 0.9
  optim.b2 = 0.98
  optim.eps = 1e-8
  optim.weight_decay = 0.1
  optim.grad_clip_norm = 0.0  # 0 disables clipping (official: none).
  return optim


def _data_section() -> ml_collections.ConfigDict:
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


EVAL_KINDS = ("zero_shot", "retrieval", "linear_probe")


def eval_spec(kind: str, dataset: str, **settings) -> ml_collections.ConfigDict:
  """One entry of `config.evals`: what to evaluate, on which data (declip_jax/evaluation/datasets.py), and the
  settings of its kind; keys another kind uses are ignored.

  Args:
    kind: "zero_shot" (top-1/top-5/mean per-class recall), "retrieval" (image<->text Recall@1/5/10, any of an
      image's captions is a hit) or "linear_probe" (logistic regression on frozen image-tower features).
    dataset: "builtin:SPLIT", "tfds:NAME/SPLIT", "tfrecord:GLOB" or "heldout" (retrieval on the training data's
      held-out split: data.tfrecord.eval_files / data.tfds.eval_split / the built-in test split).
    **settings: values for the keys below; an unknown key is an error.
  """
  s = ml_collections.ConfigDict()
  s.kind = kind
  s.dataset = dataset
  s.enabled = True
  s.every_steps = 0  # 0: eval.every_steps.
  s.num_examples = 0  # Evaluate the first this many examples of the split; 0: all.
  s.tfds_data_dir = ""  # Empty: data.tfds.data_dir, else TFDS's default.
  s.image_key = ""  # Empty: "image" (TFDS) or "jpg" (TFRecord).
  s.label_key = ""  # Empty: "label"; for "builtin:" data the attribute (shape, colour, size, position, background).
  s.caption_key = ""  # Retrieval; empty: "captions/text" (TFDS) or "txt" (TFRecord; one or several strings).
  s.class_names_file = ""  # One class name per line in label order; empty: the TFDS label feature's names.
  s.templates = "openai_imagenet_80"  # Zero-shot prompt template set (declip_jax/templates.py).
  s.token_wise = False  # Zero-shot: FILIP's token-wise classifier (official) instead of the global embeddings.
  s.train_dataset = ""  # Linear probe: the split the classifier is fitted on (the same forms as dataset).
  s.num_train_examples = 0  # Linear probe: the first this many training examples; 0: all.
  s.validation_fraction = 0.2  # Linear probe: training examples held out to choose the L2 strength.
  s.l2_grid = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # Linear probe: L2 strengths tried.
  s.max_iterations = 1000  # Linear probe: L-BFGS iterations at most.
  for key, value in settings.items():
    if key not in s:
      raise ConfigError(f"eval_spec: unknown setting {key!r}; known: {', '.join(s)}.")
    s[key] = value
  return s


def builtin_evals(attributes=("colour", "shape"), linear_probe: bool = False) -> ml_collections.ConfigDict:
  """Evaluations on the built-in data: zero-shot per attribute (`zero_shot_<attribute>`, templates
  `builtin_<attribute>`), retrieval on the test split, and optionally a linear probe of the shape."""
  evals = {f"zero_shot_{a}": eval_spec("zero_shot", "builtin:test", label_key=a, templates=f"builtin_{a}")
           for a in attributes}
  evals["retrieval"] = eval_spec("retrieval", "heldout")
  if linear_probe:
    evals["linear_probe_shape"] = eval_spec("linear_probe", "builtin:test", train_dataset="builtin:train",
                                            label_key="shape", num_train_examples=5000)
  return ml_collections.ConfigDict(evals)


def imagenet_zero_shot(templates: str = "openai_imagenet_80", token_wise: bool = False) -> ml_collections.ConfigDict:
  """ImageNet-1k validation zero-shot (TFDS imagenet2012; class names from its label feature unless a
  class_names_file is set, e.g. OpenAI's curated names), as the official DeCLIP code evaluates during training;
  token_wise: FILIP's token-wise classifier."""
  return eval_spec("zero_shot", "tfds:imagenet2012/validation", templates=templates, token_wise=token_wise)


def token_wise_evals(evals: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`evals` for a FILIP model, in place: zero-shot with the token-wise classifier (as the official code), and no
  retrieval on global embeddings (FILIP trains none: its global projections stay at their initialisation; a
  token-wise retrieval is not implemented). Linear probes read the image tower's features and stay."""
  for name in list(evals):
    if evals[name].kind == "zero_shot":
      evals[name].token_wise = True
    elif evals[name].kind == "retrieval":
      del evals[name]
  return evals


def text_views(c: ml_collections.ConfigDict) -> int:
  """Captions per pair that the text tower encodes and NNS enqueues: the MLM one, and the EDA one with data.eda."""
  return 1 + int(c.data.eda)


def _require(condition: bool, message: str):
  if not condition:
    raise ConfigError(message)


def validate_distributed(c: ml_collections.ConfigDict) -> None:
  """The distributed.* keys (checked before the runtime starts, i.e. before the rest of validate can run)."""
  d = c.distributed
  _require(d.mode in ("auto", "always", "never"),
           f"distributed.mode must be 'auto', 'always' or 'never', got {d.mode!r}.")
  if d.num_processes > 1:
    _require(bool(d.coordinator_address) and 0 <= d.process_id < d.num_processes,
             "distributed.num_processes > 1 needs distributed.coordinator_address (host:port) and a "
             "distributed.process_id in [0, num_processes).")


def validate(c: ml_collections.ConfigDict, num_batch_shards: int = 1) -> None:
  """Raises ConfigError naming the keys when `c` is inconsistent.

  Args:
    c: the experiment config.
    num_batch_shards: devices the global batch is split over (mesh "data" x "fsdp").
  """
  _validate_schedule(c)
  _validate_losses(c)
  _validate_queue_and_batch_shards(c, num_batch_shards)
  _validate_mlm(c)
  _validate_model(c)
  _validate_data(c)
  _validate_evals(c)
  _validate_augment(c)


def _validate_schedule(c: ml_collections.ConfigDict) -> None:
  """train.*, checkpoint.*, eval.every_steps, distributed.*, train.recovery.*."""
  b = c.train.batch_size
  _require(b > 0, f"train.batch_size must be positive, got {b}.")
  _require(c.train.num_steps > 0, f"train.num_steps must be positive, got {c.train.num_steps}.")
  grace = c.checkpoint.preemption_grace_seconds
  _require(grace >= 0, f"checkpoint.preemption_grace_seconds must be >= 0 (0: no check), got {grace}.")
  for key in ("train.log_every_steps", "checkpoint.every_steps", "eval.every_steps", "checkpoint.keep",
              "checkpoint.lock_heartbeat_seconds", "checkpoint.lock_stale_seconds"):
    section, name = key.split(".")
    _require(c[section][name] > 0, f"{key} must be positive, got {c[section][name]}.")
  validate_distributed(c)
  r = c.train.recovery
  for key in ("spike_window", "max_consecutive_nonfinite", "min_steps_back"):
    _require(r[key] > 0, f"train.recovery.{key} must be positive, got {r[key]}.")
  _require(r.spike_threshold > 0, f"train.recovery.spike_threshold must be positive, got {r.spike_threshold}.")
  _require(0 < r.lr_factor <= 1, f"train.recovery.lr_factor must be in (0, 1], got {r.lr_factor}.")
  _require(r.max_rollbacks >= 0, f"train.recovery.max_rollbacks must be >= 0, got {r.max_rollbacks}.")


def _validate_losses(c: ml_collections.ConfigDict) -> None:
  """loss.*, the image views the terms need, and the BatchNorm groups and FILIP sizes they use."""
  b, w = c.train.batch_size, c.loss.weights
  for term in LOSS_TERMS + ("mvs",):
    _require(w[term] >= 0, f"loss.weights.{term} must be >= 0, got {w[term]}.")
  _require(w.clip_mvs > 0 or w.filip > 0, "loss.weights.clip_mvs or loss.weights.filip must be > 0: every method "
           "trains an image-text term.")
  _require(c.loss.mvs_mode in ("official", "paper"),
           f"loss.mvs_mode must be 'official' or 'paper', got {c.loss.mvs_mode!r}.")
  _require(c.loss.contrastive in ("softmax", "sigmoid"),
           f"loss.contrastive must be 'softmax' or 'sigmoid', got {c.loss.contrastive!r}.")
  _require(c.loss.sigmoid_implementation in ("ring", "gathered"),
           f"loss.sigmoid_implementation must be 'ring' or 'gathered', got {c.loss.sigmoid_implementation!r}.")
  views = c.data.num_image_views
  _require(views in (1, 2, 3), f"data.num_image_views must be 1, 2 or 3, got {views}.")
  _require((views == 3) == (w.simclr > 0), "data.num_image_views = 3 goes with loss.weights.simclr > 0 (SLIP: a "
           "view for the CLIP term and two for SimCLR), and SimCLR needs those 3 views.")
  if w.iss > 0:
    _require(views == 2, "loss.weights.iss > 0 needs data.num_image_views = 2 (SimSiam compares two views).")
  if w.iss > 0 or w.simclr > 0:
    g = c.ssl.bn_group_size
    _require(g > 1 and b % g == 0,
             f"train.batch_size ({b}) must be divisible by ssl.bn_group_size ({g}, > 1): BatchNorm statistics "
             "are taken over groups of that many examples.")
  _require(c.loss.simclr_temperature > 0, "loss.simclr_temperature must be > 0.")
  if w.filip > 0:
    f = c.model.filip
    tokens = ((c.model.image.image_size // c.model.image.patch_size) ** 2 if c.model.image.arch == "vit"
              else (c.model.image.image_size // 32) ** 2)
    if c.model.image.mask_ratio > 0:  # FILIP selects among the visible tokens (models/vit.kept_patches).
      tokens = max(1, round(tokens * (1.0 - c.model.image.mask_ratio)))
    _require(0 < f.top_k <= min(tokens, c.model.text.context_length),
             f"model.filip.top_k ({f.top_k}) must be in [1, {min(tokens, c.model.text.context_length)}] (the image "
             f"tower's {tokens} tokens and model.text.context_length).")
    _require(f.logit_scale.min <= f.logit_scale.max, "model.filip.logit_scale.min must be <= its max.")
    _require(c.loss.filip_chunk_size >= 0, "loss.filip_chunk_size must be >= 0.")


def _validate_queue_and_batch_shards(c: ml_collections.ConfigDict, num_batch_shards: int) -> None:
  """nns.* (with NNS on), and the global batch against the mesh's batch shards."""
  b, w = c.train.batch_size, c.loss.weights
  if w.nns > 0:
    groups = c.nns.groups
    _require(groups > 0 and b % groups == 0,
             f"train.batch_size ({b}) must be divisible by nns.groups ({groups}): each group's buffer is fed by "
             "its own contiguous slice of the batch.")
    per_group = (b // groups) * text_views(c)
    _require(c.nns.group_size >= per_group,
             f"nns.group_size ({c.nns.group_size}) must hold one step's {per_group} enqueued embeddings per group "
             "(train.batch_size / nns.groups x text views).")
    _require(c.nns.search in ("local", "global"), f"nns.search must be 'local' or 'global', got {c.nns.search!r}.")
    _require(c.nns.chunk_size > 0, f"nns.chunk_size must be positive, got {c.nns.chunk_size}.")
    _require(groups % num_batch_shards == 0 or num_batch_shards % groups == 0,
             f"nns.groups ({groups}) and the {num_batch_shards} batch shards of mesh.shape must divide one another.")
  _require(b % num_batch_shards == 0,
           f"train.batch_size ({b}) must be divisible by the {num_batch_shards} batch shards of mesh.shape "
           f"{tuple(c.mesh.shape)}.")
  k = c.train.accum_steps
  _require(isinstance(k, int) and k >= 1, f"train.accum_steps must be an integer >= 1, got {k!r}.")
  _require(b % (num_batch_shards * k) == 0,
           f"train.batch_size ({b}) must be divisible by train.accum_steps ({k}) x the {num_batch_shards} batch "
           "shards: each device's rows split into equal micro-batches.")
  if k > 1 and c.model.image.arch == "resnet":
    g, micro = c.model.image.bn_group_size, b // (num_batch_shards * k)
    _require(micro % g == 0,
             f"train.accum_steps ({k}) gives micro-batches of {micro} examples per device, which must hold whole "
             f"ResNet BatchNorm groups (model.image.bn_group_size {g}) for the accumulated update to equal the "
             "full batch's: lower train.accum_steps or model.image.bn_group_size.")


def _validate_mlm(c: ml_collections.ConfigDict) -> None:
  """mlm.*."""
  _require(c.mlm.mask_token_frac + c.mlm.random_token_frac <= 1.0,
           "mlm.mask_token_frac + mlm.random_token_frac must be <= 1.")
  _require(c.mlm.max_predictions >= 0, f"mlm.max_predictions must be >= 0, got {c.mlm.max_predictions}.")


def _validate_model(c: ml_collections.ConfigDict) -> None:
  """model.*: dtype, attention, remat, each tower's shapes, the logit-scale clamp."""
  b = c.train.batch_size
  _require(c.model.dtype in ("float32", "bfloat16"), f"model.dtype must be float32 or bfloat16, got {c.model.dtype!r}.")
  img = c.model.image
  _require(c.model.attention_implementation in ("", "xla", "cudnn"),
           "model.attention_implementation must be '', 'xla' or 'cudnn', got "
           f"{c.model.attention_implementation!r}.")
  for tower in ("image", "text"):
    _require(c.model[tower].remat in REMAT_POLICIES,
             f"model.{tower}.remat must be one of {', '.join(REMAT_POLICIES)}, got {c.model[tower].remat!r}.")
  _require(c.model.scan_unroll >= 0, f"model.scan_unroll must be 0 (no loop) or more, got {c.model.scan_unroll}.")
  _require(img.arch in ("vit", "resnet"), f"model.image.arch must be 'vit' or 'resnet', got {img.arch!r}.")
  if img.arch == "vit":
    _require(img.image_size % img.patch_size == 0,
             f"model.image.image_size ({img.image_size}) must be a multiple of model.image.patch_size "
             f"({img.patch_size}).")
    _require(img.width % img.heads == 0, "model.image.width must be divisible by model.image.heads.")
    _require(0.0 <= img.mask_ratio < 1.0, f"model.image.mask_ratio must be in [0, 1), got {img.mask_ratio}.")
  else:
    _require(img.mask_ratio == 0.0, f"model.image.mask_ratio ({img.mask_ratio}) applies to ViT towers (it drops "
             "patch tokens); a ResNet has none: set it 0.")
    _require(img.image_size % 32 == 0, f"model.image.image_size ({img.image_size}) must be a multiple of 32 for "
             "a ResNet tower (five halvings).")
    _require(not img.freeze_patch_embed, "model.image.freeze_patch_embed applies to ViT towers; a ResNet has no "
             "patch embedding: set it False.")
    _require(len(img.resnet_layers) == 4 and min(img.resnet_layers) >= 1,
             f"model.image.resnet_layers must be 4 positive block counts, got {tuple(img.resnet_layers)}.")
    _require((img.width * 32) % img.heads == 0,
             "model.image.width x 32 (the attention pool's width) must be divisible by model.image.heads.")
    g = img.bn_group_size
    _require(g > 1 and b % g == 0,
             f"train.batch_size ({b}) must be divisible by model.image.bn_group_size ({g}, > 1): the ResNet "
             "tower's BatchNorm statistics are taken over groups of that many examples.")
  _require(c.model.text.width % c.model.text.heads == 0, "model.text.width must be divisible by model.text.heads.")
  f = img.unmasked_final_fraction
  _require(0.0 <= f <= 1.0, f"model.image.unmasked_final_fraction must be in [0, 1], got {f}.")
  ls = c.model.logit_scale
  _require(ls.min <= ls.max, "model.logit_scale.min must be <= model.logit_scale.max.")


def _validate_data(c: ml_collections.ConfigDict) -> None:
  """data.*: the source's keys (data/sources/), the tokenizer and its token layout."""
  sources.validate(c, _require)
  _require(c.data.tokenizer in ("clip_bpe", "sentencepiece", "word"),
           f"data.tokenizer must be 'clip_bpe', 'sentencepiece' or 'word', got {c.data.tokenizer!r}.")
  _require(c.data.tokenizer == "word" or bool(c.data.vocab_path),
           f"data.tokenizer {c.data.tokenizer!r} needs data.vocab_path ("
           + ("OpenAI's CLIP merges file, bpe_simple_vocab_16e6.txt.gz" if c.data.tokenizer == "clip_bpe" else
              "a SentencePiece .model; python -m declip_jax.data.train_sentencepiece trains one") + ").")
  _require(c.data.token_layout in ("declip", "openai"),
           f"data.token_layout must be 'declip' or 'openai', got {c.data.token_layout!r}.")


def _validate_augment(c: ml_collections.ConfigDict) -> None:
  """data.augment.*."""
  _require(c.data.augment.recipe in ("moco_v2", "crop"),
           f"data.augment.recipe must be 'moco_v2' or 'crop', got {c.data.augment.recipe!r}.")
  _require(c.data.augment.first_view in ("", "crop"),
           f"data.augment.first_view must be '' or 'crop', got {c.data.augment.first_view!r}.")
  for key in ("crop_scale", "crop_ratio", "blur_sigma", "first_view_crop_scale"):
    value = c.data.augment[key]
    _require(len(value) == 2 and value[0] <= value[1],
             f"data.augment.{key} must be a (min, max) pair with min <= max, got {tuple(value)}.")
  for key in ("crop_scale", "first_view_crop_scale"):
    lo, hi = c.data.augment[key]
    _require(0 < lo <= hi <= 1, f"data.augment.{key} must satisfy 0 < min <= max <= 1, got {(lo, hi)}.")


def _validate_evals(c: ml_collections.ConfigDict) -> None:
  _require(c.eval.batch_size > 0, f"eval.batch_size must be positive, got {c.eval.batch_size}.")
  for name, spec in c.evals.items():
    key = f"evals.{name}"
    _require(isinstance(spec, ml_collections.ConfigDict) and "kind" in spec,
             f"{key} must be made with config.eval_spec(kind, dataset, ...).")
    _require(spec.kind in EVAL_KINDS, f"{key}.kind must be one of {', '.join(EVAL_KINDS)}, got {spec.kind!r}.")
    _require(spec.every_steps >= 0, f"{key}.every_steps must be >= 0 (0: eval.every_steps), got {spec.every_steps}.")
    _require(spec.num_examples >= 0 and spec.num_train_examples >= 0, f"{key}: example counts must be >= 0.")
    dataset_forms = sources.dataset_forms(spec.kind == "retrieval")
    _require(spec.dataset.startswith(dataset_forms),
             f"{key}.dataset {spec.dataset!r} must start with one of {', '.join(dataset_forms)}.")
    if spec.kind == "zero_shot" and spec.token_wise:
      _require(c.loss.weights.filip > 0, f"{key}.token_wise needs FILIP's token mappings (loss.weights.filip > 0).")
    if spec.kind == "zero_shot":
      _require(spec.templates in templates.TEMPLATE_SETS,
               f"{key}.templates {spec.templates!r} is not a template set; known: "
               f"{', '.join(sorted(templates.TEMPLATE_SETS))}.")
    if spec.kind == "linear_probe":
      _require(spec.train_dataset.startswith(sources.dataset_forms(False)),
               f"{key}.train_dataset must name the split the probe is fitted on (e.g. 'tfds:cifar10/train').")
      _require(0 < spec.validation_fraction < 1, f"{key}.validation_fraction must be in (0, 1).")
      _require(len(spec.l2_grid) > 0 and min(spec.l2_grid) >= 0, f"{key}.l2_grid must be non-negative values.")
      _require(spec.max_iterations > 0, f"{key}.max_iterations must be positive.")
