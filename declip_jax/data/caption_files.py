"""Caption files: (image path, caption) rows of a CSV with a header or a JSONL file, as the image-folder source reads
them and `write_tfrecords` shards them. No flags here: commands that define their own import this freely."""

import csv
import json
from typing import Iterator

from etils import epath


def read_rows(path: str, image_column: str, caption_column: str) -> Iterator[tuple[str, str]]:
  """(image path, caption) rows of a CSV (with a header) or JSONL file."""
  path = epath.Path(path)
  with path.open() as f:
    if path.suffix == ".jsonl":
      for line in f:
        if line.strip():
          row = json.loads(line)
          yield str(row[image_column]), str(row.get(caption_column) or "")
    else:
      reader = csv.DictReader(f)
      missing = {image_column, caption_column} - set(reader.fieldnames or ())
      if missing:
        raise ValueError(f"{path}: no column {sorted(missing)} in the header {reader.fieldnames}.")
      for row in reader:
        yield row[image_column], row[caption_column] or ""
