"""`python -m bench [P1 P2 ...]`: run benchmarks, print results, write bench/results/latest.json."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback
from pathlib import Path

import bench
from bench.harness import Context, Result, machine, write_results


def discover() -> dict[str, str]:
    """{"P1": "bench.p1_throughput", ...} from the modules named p<N>_*.py."""
    found = {}
    for mod in pkgutil.iter_modules(bench.__path__):
        if mod.name[0] == "p" and mod.name.split("_")[0][1:].isdigit():
            found[mod.name.split("_")[0].upper()] = f"bench.{mod.name}"
    return dict(sorted(found.items(), key=lambda kv: int(kv[0][1:])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all), e.g. P1 P3")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    available = discover()
    names = [n.upper() for n in args.names] or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {list(available)}")
    print(f"machine: {machine()}")
    results: list[Result] = []
    failed = False
    for name in names:
        ctx = Context()
        try:
            module = importlib.import_module(available[name])
            print(f"\n=== {name}: {module.__doc__.strip().splitlines()[0]}", flush=True)
            for result in module.run(ctx, quick=args.quick):
                results.append(result)
                _print(result)
        except Exception:
            failed = True
            traceback.print_exc()
        finally:
            ctx.close()
    write_results(results, Path(__file__).resolve().parent / "results")
    return 1 if failed else 0


def _print(r: Result) -> None:
    base = f"  vs {r.baseline} {r.baseline_value:g}" if r.baseline_value is not None else ""
    ratio = f"  ratio {r.ratio:.3f}" if r.ratio is not None else ""
    met = {True: "  goal met", False: "  GOAL MISSED", None: ""}[r.met]
    print(f"  {r.benchmark} {r.metric}: {r.value:g} {r.unit}{base}{ratio}  [{r.goal}]{met}")
    for key, value in r.details.items():
        print(f"      {key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
