"""The scheduling benchmarks (`manage.py bench_publish`, `manage.py bench_api`; BENCHMARKS.md): seeding,
the three publishing variants that are measured side by side, and the API measurements."""
