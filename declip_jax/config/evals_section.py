"""eval.* and evals.*: the named evaluations (kind, data, settings), their defaults, presets and checks. The
kinds are evaluated by declip_jax/evaluation/ (its registry of evaluators holds the same names)."""

import ml_collections

from declip_jax import templates
from declip_jax.config.config_error import ConfigError, require

EVAL_KINDS = ("zero_shot", "retrieval", "linear_probe", "benchmark")


def defaults() -> ml_collections.ConfigDict:
  """eval.*: the default period and batch of the named evaluations (config.evals)."""
  eval_ = ml_collections.ConfigDict()
  eval_.every_steps = 5000  # The period of every evaluation whose evals.<name>.every_steps is 0.
  eval_.batch_size = 256  # Global, split over the mesh's batch axes.
  return eval_


def eval_spec(kind: str, dataset: str, **settings) -> ml_collections.ConfigDict:
  """One entry of `config.evals`: what to evaluate, on which data (declip_jax/evaluation/datasets.py), and the
  settings of its kind; keys another kind uses are ignored.

  Args:
    kind: "zero_shot" (top-1/top-5/mean per-class recall), "retrieval" (image<->text Recall@1/5/10, any of an
      image's captions is a hit), "linear_probe" (logistic regression on frozen image-tower features) or
      "benchmark" (benchmark tasks with CLIP_benchmark's definitions: `dataset` names them, `data_root` holds
      their tars; docs/evaluation.md, "Benchmark a model").
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
  # Benchmark (`dataset`: task keys, list names or a task-list file, as `python -m declip_jax.benchmark --tasks`):
  # where the tasks' tars are, in CLIP_benchmark's layout (empty: the tasks TFDS has).
  s.data_root = ""
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


def validate(c: ml_collections.ConfigDict) -> None:
  """eval.* and every evals.<name>: its kind, dataset form, templates and the settings of its kind."""
  from declip_jax.data import sources  # pylint: disable=g-import-not-at-top  (the data registry's dataset forms)
  require(c.eval.every_steps > 0, f"eval.every_steps must be positive, got {c.eval.every_steps}.")
  require(c.eval.batch_size > 0, f"eval.batch_size must be positive, got {c.eval.batch_size}.")
  for name, spec in c.evals.items():
    key = f"evals.{name}"
    require(isinstance(spec, ml_collections.ConfigDict) and "kind" in spec,
            f"{key} must be made with config.eval_spec(kind, dataset, ...).")
    require(spec.kind in EVAL_KINDS, f"{key}.kind must be one of {', '.join(EVAL_KINDS)}, got {spec.kind!r}.")
    require(spec.every_steps >= 0, f"{key}.every_steps must be >= 0 (0: eval.every_steps), got {spec.every_steps}.")
    require(spec.num_examples >= 0 and spec.num_train_examples >= 0, f"{key}: example counts must be >= 0.")
    if spec.kind == "benchmark":
      require(bool(spec.dataset.strip()), f"{key}.dataset must name benchmark tasks (e.g. 'imagenet1k,vtab/cifar100', "
              "'datacomp' or a task-list file).")
      continue
    dataset_forms = sources.dataset_forms(spec.kind == "retrieval")
    require(spec.dataset.startswith(dataset_forms),
            f"{key}.dataset {spec.dataset!r} must start with one of {', '.join(dataset_forms)}.")
    if spec.kind == "zero_shot" and spec.token_wise:
      require(c.loss.weights.filip > 0, f"{key}.token_wise needs FILIP's token mappings (loss.weights.filip > 0).")
    if spec.kind == "zero_shot":
      require(spec.templates in templates.TEMPLATE_SETS,
              f"{key}.templates {spec.templates!r} is not a template set; known: "
              f"{', '.join(sorted(templates.TEMPLATE_SETS))}.")
    if spec.kind == "linear_probe":
      require(spec.train_dataset.startswith(sources.dataset_forms(False)),
              f"{key}.train_dataset must name the split the probe is fitted on (e.g. 'tfds:cifar10/train').")
      require(0 < spec.validation_fraction < 1, f"{key}.validation_fraction must be in (0, 1).")
      require(len(spec.l2_grid) > 0 and min(spec.l2_grid) >= 0, f"{key}.l2_grid must be non-negative values.")
      require(spec.max_iterations > 0, f"{key}.max_iterations must be positive.")
