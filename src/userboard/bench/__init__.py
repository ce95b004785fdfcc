"""`userboard bench`: latency, fan-out, connections, write cost and views, each beside a baseline
measured in the same run. See runner.py for the sections and docs/benchmarks.md for results."""
