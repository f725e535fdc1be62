"""Benchmark a model on the field's tasks, with CLIP_benchmark's definitions and DataComp's task list and format
(docs/evaluation.md, "Benchmark a model").

  python -m declip_jax.benchmark --workdir=RUN --tasks=datacomp --data_root=DIR --output=FILE.jsonl

tasks.py: DataComp's 38 (+2) tasks and task lists; metrics.py: CLIP_benchmark's metrics; prompts.py and data/:
class names and templates; suite.py: runs a task on the mesh, the result lines and aggregates; tables.py: the
Markdown and CSV tables; make_tars.py: writes a dataset in CLIP_benchmark's layout.
"""
