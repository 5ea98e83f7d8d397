"""Benchmarks: programs that print figures, each a ratio measured side by side in one run.

Run them as modules from the repository root, e.g. ``python -m bench.send_path --quick``.
"""
