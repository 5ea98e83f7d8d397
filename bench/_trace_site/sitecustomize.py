"""Loaded by a benchmark's worker processes when ``bench.curves --trace-jobs`` puts this folder on
their ``PYTHONPATH``: it traces each send job's steps (``bench._job_trace``). Nothing else."""

import os
import sys

if os.environ.get("UCWA_BENCH_TRACE_DIR") and "worker" in sys.argv:
    from bench._job_trace import install

    install(os.environ["UCWA_BENCH_TRACE_DIR"])
