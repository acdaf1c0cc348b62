"""Benchmarks (`make bench`). Each module `bench/p<N>_<name>.py` defines `run(ctx) -> list[Result]`."""
