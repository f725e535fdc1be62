"""Studies: grids of ordinary training runs whose results are kept as committed records (docs/design.md §16).

  python -m declip_jax.study --study=configs/studies/<name>.py [--parallel=1] [--dry_run]

grid.py: the runs of a study config and the command of each; run_records.py: a finished run's record and which runs
are done; report.py: the table, CSV and plot rebuilt from the records; run_grid.py: the command line, which runs
what is missing.
"""
