"""The documentation holds together: every relative link in README.md and docs/*.md resolves (the file, and the
heading an anchor names), every `configs/...` path a documented command names exists, every "§N" the code
cites is a section of docs/design.md, and nothing refers to files outside the repository."""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "launch" / "README.md", *sorted((REPO / "docs").glob("*.md")),
         *sorted((REPO / "docs" / "benchmarks").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_FILES = [p for d in ("declip_jax", "configs", "tests", "benchmarks", "launch") for p in (REPO / d).rglob("*")
              if p.suffix in (".py", ".sh", ".md", ".sbatch", ".txt") and p.name != "test_docs.py"]


def anchor(heading: str) -> str:
  """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: pathlib.Path) -> set[str]:
  text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
  return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.*)$", text, re.M)}


def links(page: pathlib.Path) -> list[str]:
  text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
  return [m.group(1) for m in LINK.finditer(text) if not re.match(r"[a-z]+:", m.group(1))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
  broken = []
  for link in links(page):
    path, _, fragment = link.partition("#")
    target = (page.parent / path).resolve() if path else page
    if not target.exists():
      broken.append(f"{link}: no {target.relative_to(REPO) if target.is_relative_to(REPO) else target}")
    elif fragment and target.suffix == ".md" and fragment not in anchors(target):
      broken.append(f"{link}: no heading #{fragment} in {target.name}")
  assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_readme_is_a_front_door():
  assert len((REPO / "README.md").read_text().splitlines()) < 300


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_config_a_documented_command_names_exists(page):
  named = set(re.findall(r"\bconfigs/[\w/]+\.py", page.read_text()))
  missing = sorted(p for p in named if not (REPO / p).exists())
  assert not missing, f"{page.name} names configs that do not exist: {missing}"


def test_every_design_section_the_code_cites_exists():
  sections = set(re.findall(r"^## (\d+)\. ", (REPO / "docs" / "design.md").read_text(), re.M))
  cited = {}
  for path in CODE_FILES + PAGES:
    for number in re.findall(r"§\s?(\d+)", path.read_text(errors="replace")):
      cited.setdefault(number, path.relative_to(REPO))
  missing = {f"§{n}": str(where) for n, where in cited.items() if n not in sections}
  assert cited and not missing, f"cited but not in docs/design.md: {missing}"


def test_nothing_refers_outside_the_repository():
  outside_reference = re.compile(r"\.\./shared\b|\bshared/reference\b|\bDESIGN\.md\b|\bDESIGN §")
  outside = [str(p.relative_to(REPO)) for p in CODE_FILES + PAGES
             if outside_reference.search(p.read_text(errors="replace"))]
  assert not outside, f"these refer to files outside the repository: {outside}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_script_and_module_a_page_names_exists(page):
  """`benchmarks/X.py` (and any other repository .py path) and `python -m declip_jax...` / `tests...` modules."""
  text = page.read_text()
  scripts = set(re.findall(r"\b((?:benchmarks|tests|launch|declip_jax)/[\w/]+\.(?:py|sh))\b", text))
  modules = set(re.findall(r"python3? -m ((?:declip_jax|tests|benchmarks)(?:\.\w+)*)", text))
  missing = sorted(p for p in scripts if not (REPO / p).exists())
  missing += sorted(m for m in modules if not any((REPO / (m.replace(".", "/") + suffix)).exists()
                                                   for suffix in (".py", "/__main__.py")))
  assert not missing, f"{page.name} names scripts or modules that do not exist: {missing}"


def test_no_page_speaks_of_sessions_or_issue_numbers():
  pattern = re.compile(r"\b(this|the previous|an earlier|a later|the next) session\b|\bissue #?\d+", re.I)
  found = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in PAGES for m in pattern.finditer(p.read_text())]
  assert not found, found


def test_the_gpu_fit_table_is_its_record_rendered():
  import json  # pylint: disable=g-import-not-at-top
  from benchmarks import fit_table_docs  # pylint: disable=g-import-not-at-top
  page = (REPO / "docs" / "accelerators.md").read_text()
  rows = json.loads((REPO / "docs" / "benchmarks" / "gpu_fit.json").read_text())
  assert fit_table_docs.rendered(page, rows) == page, (
      "docs/accelerators.md's GPU table differs from docs/benchmarks/gpu_fit.json: python benchmarks/fit_table.py "
      "--family=gpu --out=docs/benchmarks/gpu_fit.json --docs=docs/accelerators.md")


def test_the_tpu_fit_table_is_its_record_rendered():
  import json  # pylint: disable=g-import-not-at-top
  from benchmarks import fit_table_docs  # pylint: disable=g-import-not-at-top
  page = (REPO / "docs" / "accelerators.md").read_text()
  rows = json.loads((REPO / "docs" / "benchmarks" / "tpu_fit.json").read_text())
  assert fit_table_docs.rendered(page, rows, "tpu") == page, (
      "docs/accelerators.md's TPU table differs from docs/benchmarks/tpu_fit.json: python benchmarks/fit_table.py "
      "--family=tpu --out=docs/benchmarks/tpu_fit.json --docs=docs/accelerators.md")
