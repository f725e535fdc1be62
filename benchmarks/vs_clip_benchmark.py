"""declip_jax's benchmark command vs CLIP_benchmark: the same weights, tars, batch size and precision, each command
timed as a user runs it (one process from start to exit, rounds alternating), the metrics each gives, and what
each side's preprocessing makes of the same images. Needs requirements-interop.txt, and NumPy < 2.4 for
CLIP_benchmark 1.6.2 (`pip install --target DIR numpy==2.3.5`, then CLIP_BENCHMARK_PYTHONPATH=DIR).

  python benchmarks/vs_clip_benchmark.py --config=configs/clip_vit_b32.py [--num_images=1000] [--source_size=256] \\
      [--rounds=2] [--batch_size=64] [--out=docs/benchmarks/vs_clip_benchmark.json]

The model: the config's towers with open_clip's random initialisation (seed 0), imported into a declip_jax run and
exported back (`local-dir:`), so that both sides hold the same weights; its numbers are those of random weights,
which is all a speed and preprocessing comparison needs. The tars: the converter's, from the built-in test split
rendered at --source_size pixels (a zero-shot task, `shape`, and a retrieval task, `captions`, each caption made
unique so that no two texts tie), so that both
sides resize (to the model's size: bicubic, shorter side; ours in tf.image with antialiasing, CLIP_benchmark's in
PIL). Both run in float32 (CLIP_benchmark with --no_amp) with their default loader settings. Each side runs each
task in a process of its own, as CLIP_benchmark must (one task kind per command); our one process for both tasks is
timed too. Writes --out (JSON: the record) and prints the table docs/evaluation.md shows
(declip_jax/benchmark/tables.clip_benchmark_comparison renders it; a test checks the page against the record).
"""

import importlib.metadata
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import open_clip  # noqa: E402  (before JAX/TensorFlow: its triton import segfaults after them)
import torch  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from declip_jax import host_info  # noqa: E402
from tests import clip_benchmark_case  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/clip_vit_b32.py", "The model's config (its towers).")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 1000, "Images per task.")
_SOURCE_SIZE = flags.DEFINE_integer("source_size", 256, "The side of the images in the tars.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds of both sides.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per batch, both sides (CLIP_benchmark's default).")
_OUT = flags.DEFINE_string("out", "", "Where to write the record (JSON); empty: print only.")

REPO = pathlib.Path(__file__).resolve().parent.parent
TASKS = {"shape": "zeroshot_classification", "captions": "zeroshot_retrieval"}


def _module(args: list[str], env: dict | None = None) -> float:
  """Runs `python -m ARGS` in the repository; returns its wall time in seconds (raises with its output if it fails)."""
  start = time.perf_counter()
  out = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "HF_HUB_OFFLINE": "1", **(env or {})})
  seconds = time.perf_counter() - start
  if out.returncode:
    raise RuntimeError(f"python -m {' '.join(args)} failed:\n{(out.stdout + out.stderr)[-3000:]}")
  return seconds


def make_model(config, root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """open_clip's initialisation of the config's towers -> a declip_jax run -> exported: (run, export dir)."""
  from declip_jax.interop import convert, open_clip_weights  # pylint: disable=g-import-not-at-top
  config.data.tokenizer, config.data.token_layout = "clip_bpe", "openai"
  config.data.vocab_path = open_clip.tokenizer.default_bpe()
  config.model.text.vocab_size = 49_409  # OpenAI's ids + [MASK].
  torch.manual_seed(0)
  model_config = open_clip_weights.open_clip_model_config(config)
  model_config["text_cfg"]["vocab_size"] = 49_408
  reference = open_clip.model.CLIP(**model_config)
  weights, _ = open_clip_weights.write_open_clip(root / "open_clip", {k: v.numpy() for k, v in
                                                                      reference.state_dict().items()}, model_config)
  convert.import_weights(config, str(weights), str(root / "run"))
  convert.export_weights(str(root / "run"), str(root / "export"), "model")
  return root / "run", root / "export"


def make_tars(root: pathlib.Path) -> pathlib.Path:
  """The built-in test split at --source_size, as the two tasks' tars."""
  common = ["declip_jax.benchmark.make_tars", "--config=configs/demo.py",
            f"--config.model.image.image_size={_SOURCE_SIZE.value}",
            f"--config.data.builtin.num_test={_NUM_IMAGES.value}", "--dataset=builtin:test",
            f"--shard_size={max(1, _NUM_IMAGES.value // 10)}"]  # 10 tars: CLIP_benchmark's 4 loader workers need 4.
  _module(common + ["--label_key=shape", "--templates=builtin_shape", f"--output={root / 'tars/shape/test'}"])
  _module(common + ["--kind=retrieval", f"--output={root / 'tars/captions/test'}"])
  _number_the_captions(root / "tars/captions/test")
  return root / "tars"


def _number_the_captions(split: pathlib.Path) -> None:
  """Appends "(photo KEY.J)" to caption J of each image, in place: the built-in captions repeat across images, and
  identical texts tie, which the two commands order differently (docs/evaluation.md); unique ones do not."""
  import io  # pylint: disable=g-import-not-at-top
  import tarfile  # pylint: disable=g-import-not-at-top
  for path in sorted(split.glob("*.tar")):
    with tarfile.open(path) as tar:
      members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
      for name, data in members:
        if name.endswith(".txt"):
          key = name[:-4]
          data = "\n".join(f"{c} (photo {key}.{j})" for j, c in enumerate(data.decode().splitlines())).encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def ours(run: pathlib.Path, tars: pathlib.Path, tasks: str, output: pathlib.Path) -> tuple[float, dict]:
  seconds = _module(["declip_jax.benchmark", f"--workdir={run}", f"--data_root={tars}", f"--tasks={tasks}",
                     f"--output={output}", f"--batch_size={_BATCH_SIZE.value}"])
  return seconds, {l["key"]: l["metrics"] for l in map(json.loads, output.read_text().splitlines())}


def clip_benchmark(export: pathlib.Path, tars: pathlib.Path, task: str, output: pathlib.Path) -> tuple[float, dict]:
  args, env = clip_benchmark_case.clip_benchmark_eval(export, tars, task, TASKS[task], output,
                                                      f"--batch_size={_BATCH_SIZE.value}")
  return _module(args, env), {task: json.loads(output.read_text())["metrics"]}


def preprocessing_difference(config, export: pathlib.Path, tars: pathlib.Path) -> dict:
  """Ours (data/image_views.eval_view, as the suite reads tars) against open_clip's transform from the export's
  open_clip_config.json, on the shape task's first 200 images, square and cropped to 4:3 (the shorter-side
  resize's rounding and the centre crop's offset differ between the two): max and mean |difference| in 0-255."""
  import tarfile  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from declip_jax.data import image_views  # pylint: disable=g-import-not-at-top
  _, _, transform = open_clip.create_model_and_transforms(f"local-dir:{export}")
  mean, std = (torch.tensor(v).view(3, 1, 1) for v in (config.data.mean, config.data.std))
  size = config.model.image.image_size
  with tarfile.open(tars / "shape" / "test" / "0.tar") as tar:
    pngs = [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")][:200]
  out = {}
  for shape_name, crop in (("square", None), ("4:3", (0, 0, _SOURCE_SIZE.value, _SOURCE_SIZE.value * 3 // 4))):
    diffs = []
    for png in pngs:
      image = Image.open(io.BytesIO(png)).convert("RGB")
      image = image.crop(crop) if crop else image
      theirs = (transform(image) * std + mean).permute(1, 2, 0).numpy()
      mine = image_views.eval_view(tf.constant(np.asarray(image)), size, crop_fraction=1.0).numpy()
      diffs.append(np.abs(mine - theirs) * 255)
    diffs = np.stack(diffs)
    out[shape_name] = {"images": len(pngs), "source": list(np.asarray(image).shape[:2]), "max": float(diffs.max()),
                       "mean": float(diffs.mean()), "share_over_1": float((diffs > 1).mean())}
  return out


def main(argv):
  del argv
  config = _CONFIG.value
  record = {"host": host_info.describe(), "command": " ".join(["python", *sys.argv]), "model": {
      "image": config.model.image.arch, "image_size": config.model.image.image_size,
      "patch_size": config.model.image.patch_size, "width": config.model.image.width},
            "num_images": _NUM_IMAGES.value, "source_size": _SOURCE_SIZE.value, "batch_size": _BATCH_SIZE.value,
            "versions": {p: importlib.metadata.version(p) for p in (
                "clip-benchmark", "open-clip-torch", "torch", "jax")}}
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    run, export = make_model(config, root)
    tars = make_tars(root)
    times = {"ours_per_task": [], "ours_one_process": [], "clip_benchmark_per_task": []}
    metrics = {}
    for r in range(_ROUNDS.value):
      total_ours, total_theirs = 0.0, 0.0
      for task in TASKS:  # Alternate within the round too.
        seconds, m = ours(run, tars, task, root / f"ours_{task}.jsonl")
        total_ours += seconds
        metrics.setdefault("ours", {}).update(m)
        seconds, m = clip_benchmark(export, tars, task, root / f"theirs_{task}.json")
        total_theirs += seconds
        metrics.setdefault("clip_benchmark", {}).update(m)
      seconds, _ = ours(run, tars, ",".join(TASKS), root / "ours_both.jsonl")
      times["ours_per_task"].append(total_ours)
      times["clip_benchmark_per_task"].append(total_theirs)
      times["ours_one_process"].append(seconds)
      print(f"round {r + 1}: ours {total_ours:.1f} s (one process: {seconds:.1f} s), CLIP_benchmark "
            f"{total_theirs:.1f} s", flush=True)
    record["seconds"] = times
    record["metrics"] = metrics
    record["preprocessing"] = preprocessing_difference(config, export, tars)
  images = 2 * _NUM_IMAGES.value
  median = {k: statistics.median(v) for k, v in times.items()}
  record["images_per_second"] = {k: images / v for k, v in median.items()}
  record["ratio_clip_benchmark_over_ours"] = median["clip_benchmark_per_task"] / median["ours_per_task"]
  from declip_jax.benchmark import tables  # pylint: disable=g-import-not-at-top
  print(tables.clip_benchmark_comparison(record))
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
  app.run(main)
