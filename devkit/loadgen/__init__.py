"""Realistic load for benchmarks, the demo and `scribe loadgen`: a deterministic workload
(`workload.py`, no I/O) and the loop that sends it at a target rate (`runner.py`)."""
