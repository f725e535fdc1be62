"""The benchmark tasks: DataComp's 38 (the field's standard suite, run through CLIP_benchmark's definitions), and
how a task list is named on the command line.

Each task has DataComp's key (its directory name in the published evaluation tars, e.g. `vtab/cifar100`), display
name, size of its test split, number of classes, main metric and the aggregate groups it belongs to. The data is
DataComp's `tasklist.yml` and `aggregate_scores.py` (mlfoundations/datacomp, MIT licence), transcribed.
"""

import dataclasses
import re
from typing import Optional

from etils import epath

# Main metrics (DataComp): "acc1" unless noted; retrieval: the mean of image and text recall@1.
ACC1, MEAN_PER_CLASS_RECALL, MEAN_RECALL_AT_1 = "acc1", "mean_per_class_recall", "mean_recall@1"


@dataclasses.dataclass(frozen=True)
class Task:
  """One benchmark task.

  Attributes:
    key: DataComp's key, the task's directory under the data root (`<root>/<key>/test/nshards.txt`).
    name: DataComp's display name (the `dataset` of its result line, and what the aggregates group by).
    kind: "zero_shot" (classification), "retrieval" or "linear_probe".
    main_metric: the metric DataComp averages.
    size: examples in the test split (DataComp's count), or 0 when not known.
    num_classes: 0 for retrieval.
    groups: the aggregates it counts in besides the average: "ImageNet", "ImageNet dist. shifts", "VTAB",
      "Retrieval".
    in_average: whether DataComp's average counts it (FairFace and UTKFace are run but not averaged).
    tfds: "tfds:NAME/SPLIT" where TFDS has the test split (reading it needs no tars), else "".
    directory: the task's directory under the data root when it is not `key` (a linear probe's: its dataset's).
    fewshot_k: a linear probe's examples per class (-1: the whole training split).
  """

  key: str
  name: str
  kind: str = "zero_shot"
  main_metric: str = ACC1
  size: int = 0
  num_classes: int = 0
  groups: tuple[str, ...] = ()
  in_average: bool = True
  tfds: str = ""
  directory: str = ""
  fewshot_k: int = -1

  @property
  def data_key(self) -> str:
    """The task's directory under the data root."""
    return self.directory or self.key


SHIFTS, VTAB, RETRIEVAL = "ImageNet dist. shifts", "VTAB", "Retrieval"
GROUPS = ("ImageNet", SHIFTS, VTAB, RETRIEVAL)  # DataComp's aggregates, in its order (then the average).

DATACOMP = (
    Task("vtab/caltech101", "Caltech-101", main_metric=MEAN_PER_CLASS_RECALL, size=6085, num_classes=102,
         groups=(VTAB,)),
    Task("cifar10", "CIFAR-10", size=10000, num_classes=10, tfds="tfds:cifar10/test"),
    Task("vtab/cifar100", "CIFAR-100", size=10000, num_classes=100, groups=(VTAB,), tfds="tfds:cifar100/test"),
    Task("vtab/clevr_count_all", "CLEVR Counts", size=15000, num_classes=8, groups=(VTAB,)),
    Task("vtab/clevr_closest_object_distance", "CLEVR Distance", size=15000, num_classes=6, groups=(VTAB,)),
    Task("country211", "Country211", size=21100, num_classes=211),
    Task("vtab/dtd", "Describable Textures", size=1880, num_classes=47, groups=(VTAB,)),
    Task("vtab/eurosat", "EuroSAT", size=5400, num_classes=10, groups=(VTAB,)),
    Task("fgvc_aircraft", "FGVC Aircraft", main_metric=MEAN_PER_CLASS_RECALL, size=3333, num_classes=100),
    Task("food101", "Food-101", size=25250, num_classes=101, tfds="tfds:food101/validation"),
    Task("gtsrb", "GTSRB", size=12630, num_classes=43),
    Task("imagenet1k", "ImageNet 1k", size=50000, num_classes=1000, groups=("ImageNet",),
         tfds="tfds:imagenet2012/validation"),
    Task("imagenet_sketch", "ImageNet Sketch", size=50889, num_classes=1000, groups=(SHIFTS,)),
    Task("imagenetv2", "ImageNet v2", size=10000, num_classes=1000, groups=(SHIFTS,)),
    Task("imagenet-a", "ImageNet-A", size=7500, num_classes=200, groups=(SHIFTS,)),
    Task("imagenet-o", "ImageNet-O", size=2000, num_classes=200, groups=(SHIFTS,)),
    Task("imagenet-r", "ImageNet-R", size=30000, num_classes=200, groups=(SHIFTS,)),
    Task("vtab/kitti_closest_vehicle_distance", "KITTI Vehicle Distance", size=711, num_classes=4, groups=(VTAB,)),
    Task("mnist", "MNIST", size=10000, num_classes=10, tfds="tfds:mnist/test"),
    Task("objectnet", "ObjectNet", size=18574, num_classes=113, groups=(SHIFTS,)),
    Task("vtab/flowers", "Oxford Flowers-102", main_metric=MEAN_PER_CLASS_RECALL, size=6149, num_classes=102,
         groups=(VTAB,)),
    Task("vtab/pets", "Oxford-IIIT Pet", main_metric=MEAN_PER_CLASS_RECALL, size=3669, num_classes=37,
         groups=(VTAB,)),
    Task("voc2007", "Pascal VOC 2007", size=14976, num_classes=20),
    Task("vtab/pcam", "PatchCamelyon", size=32768, num_classes=2, groups=(VTAB,)),
    Task("renderedsst2", "Rendered SST2", size=1821, num_classes=2),
    Task("vtab/resisc45", "RESISC45", size=6300, num_classes=45, groups=(VTAB,)),
    Task("cars", "Stanford Cars", size=8041, num_classes=196),
    Task("stl10", "STL-10", size=8000, num_classes=10, tfds="tfds:stl10/test"),
    Task("sun397", "SUN397", size=108754, num_classes=397, groups=(VTAB,)),
    Task("vtab/svhn", "SVHN", size=26032, num_classes=10, groups=(VTAB,), tfds="tfds:svhn_cropped/test"),
    Task("retrieval/flickr30k", "Flickr", kind="retrieval", main_metric=MEAN_RECALL_AT_1, size=31014,
         groups=(RETRIEVAL,)),
    Task("retrieval/mscoco_2014_5k_test_image_text_retrieval", "MSCOCO", kind="retrieval",
         main_metric=MEAN_RECALL_AT_1, size=5000, groups=(RETRIEVAL,)),
    Task("misc/winogavil", "WinoGAViL", kind="winogavil", main_metric="jaccard_score_10-12", size=3563,
         groups=(RETRIEVAL,)),
    Task("wilds/iwildcam", "iWildCam", main_metric="F1-macro_all", size=42791, num_classes=182),
    Task("wilds/camelyon17", "Camelyon17", size=85054, num_classes=2),
    Task("wilds/fmow", "FMoW", main_metric="acc_worst_region", size=22108, num_classes=62),
    Task("fairness/dollar_street", "Dollar Street", main_metric="acc_top5_wg", size=3503, num_classes=58),
    Task("fairness/geode", "GeoDE", main_metric="acc_wg", size=12488, num_classes=40),
    Task("fairness/fairface", "FairFace", size=10954, in_average=False),
    Task("fairness/utkface", "UTKFace", size=23703, in_average=False),
)
BY_KEY = {t.key: t for t in DATACOMP}
# Named lists: "datacomp" is the 40 DataComp runs (38 averaged); "clip_benchmark_core" the classification and
# retrieval tasks whose main metric CLIP_benchmark's definitions give.
LISTS = {
    "datacomp": tuple(t.key for t in DATACOMP),
    "datacomp_averaged": tuple(t.key for t in DATACOMP if t.in_average),
}
# Main metrics that need more than labels: the datasets' metadata (regions, groups) or WinoGAViL's own protocol.
NEEDS_METADATA = {"jaccard_score_10-12", "F1-macro_all", "acc_worst_region", "acc_top5_wg", "acc_wg"}


def custom(key: str, kind: str = "zero_shot") -> Task:
  """A task not in DataComp's list (any directory in CLIP_benchmark's layout): acc1 or mean recall@1."""
  return Task(key, key, kind=kind, main_metric=MEAN_RECALL_AT_1 if kind == "retrieval" else ACC1)


def parse(names: str) -> list[str]:
  """The task keys of `--tasks`: comma-separated keys and list names (LISTS), or a file of them (one per line,
  '#' comments); order kept, repeats dropped."""
  items = [n.strip() for n in names.split(",") if n.strip()]
  if len(items) == 1 and epath.Path(items[0]).is_file():
    items = [line.split("#", 1)[0].strip() for line in epath.Path(items[0]).read_text().splitlines()]
  keys: list[str] = []
  for item in filter(None, items):
    for key in LISTS.get(item, (item,)):
      if key not in keys:
        keys.append(key)
  return keys


LINEAR_PROBE = re.compile(r"linear_probe(?:_(\d+)shot)?/(.+)")


def linear_probe(key: str, dataset: Optional[Task]) -> Optional[Task]:
  """The linear-probe task `key` (`linear_probe/<dataset key>`, or `linear_probe_<k>shot/<dataset key>` for k
  examples per class) on `dataset`'s data: CLIP_benchmark's probe (`declip_jax.benchmark.linear_probe`), its
  main metric the `lp_` form of the dataset's (lp_acc1 or lp_mean_per_class_recall). Its line's `dataset` is the
  dataset's name with ", linear probe" (and ", k-shot"), so that DataComp's aggregates do not count it. None when
  `dataset` is None or not a classification task (a probe needs labels)."""
  if dataset is None or dataset.kind != "zero_shot":
    return None
  k = LINEAR_PROBE.fullmatch(key).group(1)
  main = dataset.main_metric if dataset.main_metric in (ACC1, MEAN_PER_CLASS_RECALL) else ACC1
  return dataclasses.replace(dataset, key=key, name=f"{dataset.name}, linear probe{f', {k}-shot' if k else ''}",
                             kind="linear_probe", main_metric=f"lp_{main}", groups=(), in_average=False,
                             directory=dataset.data_key, fewshot_k=int(k) if k else -1)


def task_of(key: str) -> Optional[Task]:
  """DataComp's task of that key (or a linear probe on one), or None for a key it does not list."""
  probe = LINEAR_PROBE.fullmatch(key)
  return linear_probe(key, BY_KEY.get(probe.group(2))) if probe is not None else BY_KEY.get(key)
