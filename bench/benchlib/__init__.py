"""Helpers for bench/run.py: processes, signed events, wrk, the sink, and one module per case."""
