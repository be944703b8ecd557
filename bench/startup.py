"""CLI start-up time: wall seconds of `genpromp-annotate --help`, `labels --help` and `benchmark --help`,
each in a fresh process (median of --runs), against the same run's `python -c "import torch, diffusers,
transformers"`, which is what a help screen paid while the commands imported the model side eagerly.

The commands are run round-robin (one warm-up round first, not counted), so a load that comes and goes
weighs on all of them alike. Each help command is also run once under `python -X importtime` to record
whether torch, diffusers or transformers got imported.

    python bench/startup.py
    python bench/startup.py --runs 9 --load "training job on both cores"
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import environment, write_json

HEAVY = ("torch", "diffusers", "transformers")


def cli_prefix() -> list[str]:
    """The installed console script beside this Python, else `python -m genpromp_annotate`."""
    script = Path(sys.executable).parent / "genpromp-annotate"
    if script.is_file():
        return [str(script)]
    found = shutil.which("genpromp-annotate")
    return [found] if found else [sys.executable, "-m", "genpromp_annotate"]


def wall_seconds(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return seconds


def heavy_imports(args: list[str]) -> list[str]:
    """The torch / diffusers / transformers modules that `python -X importtime -m genpromp_annotate ARGS` imports."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "genpromp_annotate", *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    modules = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    return sorted({m for m in modules if m.split(".")[0] in HEAVY})


def git_dirty() -> bool | None:
    """Whether the working tree has changes under genpromp_annotate/ that git_sha does not hold."""
    done = subprocess.run(["git", "status", "--porcelain", "--", "genpromp_annotate"], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1], check=False)
    return bool(done.stdout.strip()) if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command (the median is reported)")
    parser.add_argument("--load", default=None, help="what else the machine was doing, recorded in the JSON")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    prefix = cli_prefix()
    commands = {
        "genpromp-annotate --help": [*prefix, "--help"],
        "genpromp-annotate labels --help": [*prefix, "labels", "--help"],
        "genpromp-annotate benchmark --help": [*prefix, "benchmark", "--help"],
        'python -c "import torch, diffusers, transformers"': [sys.executable, "-c",
                                                              "import torch, diffusers, transformers"],
    }
    for command in commands.values():  # warm-up round: the files are in the page cache for every command
        wall_seconds(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            times[name].append(wall_seconds(command))
    heavy = {name: heavy_imports(command[len(prefix):]) for name, command in commands.items()
             if name.startswith("genpromp-annotate")}

    baseline = statistics.median(times['python -c "import torch, diffusers, transformers"'])
    results = {}
    print(f"{'command':<52} {'median s':>9} {'min s':>7} {'max s':>7}  heavy imports")
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {"median_s": round(median, 4), "min_s": round(min(values), 4), "max_s": round(max(values), 4),
                         "runs_s": [round(v, 4) for v in values], "vs_import_baseline": round(median / baseline, 3),
                         "heavy_imports": heavy.get(name)}
        shown = "-" if name not in heavy else (", ".join(heavy[name]) or "none")
        print(f"{name:<52} {median:>9.3f} {min(values):>7.3f} {max(values):>7.3f}  {shown}")

    payload = {
        "benchmark": "startup",
        "environment": environment(torch.device("cpu"), torch.get_default_dtype()),
        "load": args.load,
        "method": f"wall time of a fresh subprocess, {args.runs} timed runs each (median), round-robin after one "
                  "warm-up round; heavy_imports from one `python -X importtime -m genpromp_annotate …` run",
        "cli": " ".join(prefix),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "uncommitted_changes": git_dirty(),  # the CLI measured is the working tree, not only git_sha
        "results": results,
    }
    print(f"written {write_json('startup', payload, args.out)}")


if __name__ == "__main__":
    main()
