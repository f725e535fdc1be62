"""Renders plan records (the plan command's --json_out) into a page, between `<!-- plans: ... -->` and
`<!-- /plans -->`:

  python -m declip_jax.plan.render --page=docs/train-on-your-data.md docs/benchmarks/plans/*.json

The records in the order given; `--check` exits 1 when the page differs instead of writing it."""

import json
import re
import sys

from declip_jax.plan import written

_BLOCK = re.compile(r"(<!-- plans:[^\n]*-->\n)(.*?)(<!-- /plans -->)", re.S)


def rendered(page_text: str, records: list[dict]) -> str:
  """`page_text` with its plans block holding the records' Markdown."""
  body = "\n".join(written.record_markdown(r) for r in records)
  if not _BLOCK.search(page_text):
    raise ValueError("the page has no <!-- plans: ... --> ... <!-- /plans --> block.")
  return _BLOCK.sub(lambda m: m.group(1) + body + m.group(3), page_text, count=1)


def main(argv: list[str]) -> int:
  page = next(a.split("=", 1)[1] for a in argv if a.startswith("--page="))
  records = [json.loads(open(p).read()) for p in argv if not a_flag(p)]
  text = open(page).read()
  new = rendered(text, records)
  if "--check" in argv:
    return 0 if new == text else 1
  with open(page, "w") as f:
    f.write(new)
  return 0


def a_flag(arg: str) -> bool:
  return arg.startswith("--")


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
