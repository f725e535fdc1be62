"""Writing a small file so that a kill or a full disk mid-write leaves its previous version whole."""

from etils import epath


def write_text(path: epath.Path, text: str) -> None:
  """Writes `text` to `path` through a temporary file beside it (`.<name>.tmp`) and a rename, which replaces the
  old file in one step (local disks and POSIX filesystems; object stores replace objects whole anyway)."""
  tmp = path.parent / f".{path.name}.tmp"
  tmp.write_text(text)
  tmp.replace(path)
