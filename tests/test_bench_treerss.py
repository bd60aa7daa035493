"""The benchmarks' tree RSS sampler sums every process of a command's tree (issue 14 T4)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks import treerss

CHILD = (
    "import time; b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
)
PARENT = (
    "import subprocess, sys, time\n"
    f"ps = [subprocess.Popen([sys.executable, '-c', {CHILD!r}]) for _ in range(2)]\n"
    "[p.wait() for p in ps]\n"
)


@pytest.mark.skipif(not treerss.supported(), reason="no /proc/<pid>/task/<tid>/children")
def test_tree_rss_sums_the_grandchildren() -> None:
    proc = subprocess.Popen([sys.executable, "-c", PARENT])
    sampler = treerss.TreeSampler(proc.pid)
    assert proc.wait(timeout=60) == 0
    peak = sampler.stop()
    assert sampler.samples > 10
    assert 300 < peak < 600  # two children of 150 MiB each, the parent and interpreters
    assert treerss.tree_rss(proc.pid) == 0 and treerss.tree_pids(proc.pid) == []
