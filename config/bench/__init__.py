"""Benchmark plumbing shared by the bench commands (BENCHMARKS.md): a throw-away PostgreSQL database,
loopback ports, child processes that always die with the bench, memory sampling, percentiles, the machine
description and an HTTP load generator. Nothing here knows about the apps."""
