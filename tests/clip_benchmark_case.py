"""The case both sides of the CLIP_benchmark parity test evaluate (tests/test_clip_benchmark_parity.py): a tiny
DeCLIP run trained 2 steps with a CLIP BPE tokenizer, exported for open_clip (`local-dir:`), and two tasks in
CLIP_benchmark's tar layout at the model's image size (16 px), so that neither side resizes:

- `shape`: zero-shot classification, the converter's tars of the built-in test split (6 classes, 40 images);
- `captions`: retrieval, 24 images of seeded noise with 2 captions each, every caption different from the others,
  so that no two texts score a tie (both sides rank ties by index, but torch.topk does not promise which);
- `linear_probe/shape`: CLIP_benchmark's linear probe on `shape`, fitted on the converter's tars of the built-in
  train split (96 images).

The merges file is the test's own (16 merges: captions and templates mostly fit the context), so that the case
needs no download; the export ships it beside the weights and names it in `open_clip_config.json`, and open_clip's
`SimpleTokenizer` reads it as CLIP's.
"""

import io
import json
import os
import pathlib
import subprocess
import sys
import tarfile

import numpy as np

from tests.conftest import REPO

# Our task key: (the dataset's directory, CLIP_benchmark's --task).
TASKS = {"shape": ("shape", "zeroshot_classification"), "captions": ("captions", "zeroshot_retrieval"),
         "linear_probe/shape": ("shape", "linear_probe")}
FIXTURE = REPO / "tests" / "data" / "clip_benchmark_parity.json"
MERGES = ["t h", "th e</w>", "o f</w>", "p h", "ph o", "pho t", "phot o</w>", "c i", "ci r", "cir c", "circ l",
          "circl e</w>", "r e", "e d</w>", "n u", "nu m"]
_COLOURS = ("red", "green", "blue", "yellow", "purple", "white")
_SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
BATCH_SIZE = 16
# The linear probe's mini-batch and epochs on both sides (CLIP_benchmark's --batch_size and --fewshot_epochs):
# 600 steps instead of the defaults' 20 (64 and 10 on 96 images), so that two seeds of the probe differ less.
PROBE_BATCH_SIZE, PROBE_EPOCHS = 8, 50
PROBE_FLAGS = (f"--linear_probe_batch_size={PROBE_BATCH_SIZE}", f"--linear_probe_epochs={PROBE_EPOCHS}")


def run_module(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
  """`python -m ARGS` in the repository, quiet TensorFlow, no network for Hugging Face."""
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "HF_HUB_OFFLINE": "1", **(env or {})})


def write_merges(path: pathlib.Path) -> pathlib.Path:
  from declip_jax import token_ids  # pylint: disable=g-import-not-at-top
  token_ids.write_bpe_merges(str(path), [tuple(m.split()) for m in MERGES])
  return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_retrieval_tars(task_dir: pathlib.Path, num_images: int = 24, shard_size: int = 10) -> None:
  """`task_dir/test/{0..2}.tar` of PNG noise images with two unique captions each, and the task's files."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(7)
  split = task_dir / "test"
  split.mkdir(parents=True)
  shards = (num_images + shard_size - 1) // shard_size
  for shard in range(shards):
    with tarfile.open(split / f"{shard}.tar", "w", format=tarfile.PAX_FORMAT) as tar:
      for i in range(shard * shard_size, min(num_images, (shard + 1) * shard_size)):
        png = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(png, format="PNG")
        colour, shape = _COLOURS[i % 6], _SHAPES[(i // 6 + i) % 6]
        captions = f"a {colour} {shape} number {i}\nphoto {i}: the {shape} is {colour}"
        _add(tar, f"{i:08d}.png", png.getvalue())
        _add(tar, f"{i:08d}.txt", captions.encode())
  (split / "nshards.txt").write_text(f"{shards}\n")
  (task_dir / "dataset_type.txt").write_text("retrieval\n")


def case_config(merges: pathlib.Path):
  """tests/tiny_config.py with a CLIP BPE tokenizer on `merges` (OpenAI's id layout), a 40-token context, no evals."""
  from tests.tiny_config import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  config.train.num_steps = 2
  config.data.tokenizer, config.data.token_layout = "clip_bpe", "openai"
  config.data.vocab_path = str(merges)
  config.data.bpe_num_merges = len(MERGES)
  config.model.text.vocab_size = 512 + len(MERGES) + 3  # Byte symbols, merges, SOT, EOT, [MASK].
  config.model.text.context_length = 40
  config.evals = {}
  return config


def build(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, object]:
  """Trains the run and writes the tars under `root`: `shape` and `captions` (TASKS), and `builtin_captions`, the
  converter's retrieval tars of the built-in test split (whose captions repeat). Returns (the run's workdir, the
  tars' root, the run's config)."""
  from declip_jax import train  # pylint: disable=g-import-not-at-top
  config = case_config(write_merges(root / "merges.txt.gz"))
  run, tars = root / "run", root / "tars"
  train.run(config, str(run))
  for task, split, flags in (("shape", "test", ["--label_key=shape", "--templates=builtin_shape"]),
                             ("shape", "train", ["--label_key=shape"]),
                             ("builtin_captions", "test", ["--kind=retrieval"])):
    out = run_module("declip_jax.benchmark.make_tars", "--config=tests/tiny_config.py", f"--dataset=builtin:{split}",
                     f"--output={tars / task / split}", "--shard_size=16", *flags)
    assert out.returncode == 0, out.stderr[-3000:]
  write_retrieval_tars(tars / "captions")
  return run, tars, config


def export(run: pathlib.Path, directory: pathlib.Path) -> pathlib.Path:
  """The run exported for open_clip (`local-dir:DIRECTORY`; needs safetensors)."""
  from declip_jax.interop import convert  # pylint: disable=g-import-not-at-top
  convert.export_weights(str(run), str(directory), "parity")
  return directory


def ours(run: pathlib.Path, tars: pathlib.Path, output: pathlib.Path, *flags: str,
         tasks: tuple[str, ...] = tuple(TASKS)) -> dict[str, dict[str, float]]:
  """`python -m declip_jax.benchmark` on the tasks: {task: metrics}."""
  out = run_module("declip_jax.benchmark", f"--workdir={run}", f"--data_root={tars}", f"--output={output}",
                   f"--batch_size={BATCH_SIZE}", f"--tasks={','.join(tasks)}", *PROBE_FLAGS, *flags)
  assert out.returncode == 0, out.stderr[-3000:]
  return {line["key"]: line["metrics"] for line in map(json.loads, output.read_text().splitlines())}


def clip_benchmark_eval(exported: pathlib.Path, tars: pathlib.Path, dataset: str, kind: str, output: pathlib.Path,
                        *flags: str) -> tuple[list[str], dict[str, str]]:
  """`python -m clip_benchmark.cli eval` on a task of the tars, float32 (--no_amp), as (the module and its
  arguments, the environment it needs besides ours); `flags` are added.

  CLIP_benchmark 1.6.2 calls float() on one-element arrays, an error from NumPy 2.4 on (ours is 2.4): it runs
  unmodified with an older NumPy first on its path, from the folder CLIP_BENCHMARK_PYTHONPATH names (.ci/run:
  `pip install --target DIR numpy==2.3.5`). Its linear probe insists on CUDA (`assert device == 'cuda'`, for
  speed, and `.cuda()` calls): it runs on the CPU under PYTHONOPTIMIZE=1 (`python -O`, which drops asserts) with
  `.cuda()` the identity (tests/clip_benchmark_on_cpu.py); its arithmetic is unchanged."""
  overlay = os.environ.get("CLIP_BENCHMARK_PYTHONPATH", "")
  env = {"PYTHONPATH": os.pathsep.join(p for p in (overlay, os.environ.get("PYTHONPATH", "")) if p)}
  probe = kind == "linear_probe"
  args = ["tests.clip_benchmark_on_cpu" if probe else "clip_benchmark.cli", "eval", "--model_type=open_clip",
          f"--model=local-dir:{exported}", "--pretrained=declip_jax", f"--dataset=wds/{dataset}",
          f"--dataset_root={tars}/{{dataset}}", "--split=test", f"--task={kind}", "--no_amp", "--recall_k", "1", "5",
          "10", f"--output={output}", *flags]
  return args, {**env, "PYTHONOPTIMIZE": "1"} if probe else env


def clip_benchmarks(exported: pathlib.Path, tars: pathlib.Path, out_dir: pathlib.Path, seed: int = 0,
                    tasks: tuple[str, ...] = tuple(TASKS)) -> dict[str, dict[str, float]]:
  """`clip_benchmark_eval` on the tasks (no loader workers; the probe's settings as ours): {task: metrics}."""
  results = {}
  for task in tasks:
    dataset, kind = TASKS[task]
    output = out_dir / f"clip_benchmark_{task.replace('/', '_')}_{seed}.json"
    probe = (f"--feature_root={out_dir / f'features_{seed}'}", "--train_split=train",
             f"--batch_size={PROBE_BATCH_SIZE}", f"--fewshot_epochs={PROBE_EPOCHS}")
    args, env = clip_benchmark_eval(exported, tars, dataset, kind, output, "--num_workers=0", f"--seed={seed}",
                                    *(probe if kind == "linear_probe" else (f"--batch_size={BATCH_SIZE}",)))
    out = run_module(*args, env=env)
    if "only 0-dimensional arrays can be converted" in out.stderr:
      raise AssertionError("CLIP_benchmark 1.6.2 needs NumPy < 2.4: set CLIP_BENCHMARK_PYTHONPATH to a folder "
                           "holding it (pip install --target DIR numpy==2.3.5)")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    results[task] = json.loads(output.read_text())["metrics"]
  return results
