"""Benchmarks of hpc-curator against the tools users would pick instead (issue 6).

``python -m benchmarks`` runs every case (P1..P6), prints a table and writes
``benchmarks/results/<date>-<host>.json`` plus a markdown table; ``--quick`` is the
one-minute smoke version CI runs; ``--case P2`` selects cases. See ``benchmarks/README.md``.
"""
