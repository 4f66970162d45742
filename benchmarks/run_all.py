"""Run every benchmark and print each figure with its target and PASS/FAIL.

    python benchmarks/run_all.py            # full size (several minutes: the soak dominates)
    python benchmarks/run_all.py --smoke    # tiny sizes: checks they work, judges no timing
    python benchmarks/run_all.py --only soak --only connect_overhead
    python benchmarks/run_all.py --write-results   # also rewrite benchmarks/RESULTS.md

The sandbox runs in a separate process (see ``common``), one for the whole run, reset before
each benchmark. Exit status 1 when a judged figure fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import async_clients
import async_session
import common
import connect_overhead
import get_four_arms
import metrics_overhead
import relogin_storm
import request_overhead
import sessions_create
import soak

#: name -> (run function, needs a sandbox). Order: quick ones first, the soak last.
BENCHMARKS: dict[str, tuple[Callable[..., common.Result], bool]] = {
    "sessions_create": (sessions_create.run, False),
    "request_overhead": (request_overhead.run, True),
    "get_four_arms": (get_four_arms.run, True),
    "relogin_storm": (relogin_storm.run, True),
    "connect_overhead": (connect_overhead.run, True),
    "metrics_overhead": (metrics_overhead.run, True),
    "async_clients": (async_clients.run, True),
    "async_session": (async_session.run, True),
    "soak": (soak.run, True),
}
RESULTS = Path(__file__).with_name("RESULTS.md")
NOTES = """\
## How these were measured

- Every ratio is measured side by side in one run: the arms alternate (A B, B A, ...) so
  machine noise hits every arm alike. Medians, not means.
- The per-call ratios against another client (get_four_arms, request_overhead,
  connect_overhead) are judged on the client thread's CPU time (`time.thread_time`): what the
  client spends, without the sandbox's share, which is the same work for every arm but swings
  one arm's wall time against another's by more than the margins judged on this shared
  machine (and, being added to both sides, dilutes every wall ratio towards 1). The wall
  ratios are printed next to them for information.
- The sandbox runs in a separate process (`serve()` on a free port), so its CPU time does not
  compete with the measured client for the GIL; with 2 cores, client and server each get one.
  The library logs through `configure_logging(json=True)` into /dev/null, as an application
  would (the events' cost is in the figures, their output is not).
- The machine is shared: other engineers were running test suites on the same 2 cores at the
  same time, so absolute times are noisy (the load average is recorded above). Ratios are
  steadier than times, but a ratio near its target can land on either side from run to run.
- Re-run with `python benchmarks/run_all.py --write-results` (10 to 15 minutes on this machine:
  the soak, the async clients' httpx storms and the 100,000 sessions dominate).
"""


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model
            )
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def run_all(names: list[str], smoke: bool) -> list[common.Result]:
    """Run the named benchmarks against one sandbox process; print each as it finishes."""
    common.quiet_logging()
    results = []
    with common.sandbox_process() as target:
        print(f"sandbox: {target.url} ({target.where})", flush=True)
        for name in names:
            fn, needs = BENCHMARKS[name]
            result = fn(target if needs else None, smoke=smoke)
            results.append(result)
            print(result.report(smoke), flush=True)
    return results


def markdown(results: list[common.Result], info: dict[str, str], smoke: bool) -> str:
    """The RESULTS.md text for ``results``."""
    lines = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/run_all.py --write-results`"
        + (" (smoke size: timings not judged)." if smoke else "."),
        "",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), {info['platform']}",
        f"- Python {info['python']}; run {info['date']}; load average at the end {info['load']}",
        "",
    ]
    lines += [NOTES, *verdicts(results, smoke)]
    for r in results:
        lines += [
            f"## {r.name} ({r.seconds:.0f} s)",
            "",
            "| figure | value | target | verdict |",
            "|---|---|---|---|",
        ]
        for f in r.figures:
            value = f"{common.Figure.format_value(f.value)} {f.unit}"
            lines.append(f"| {f.name.strip()} | {value} | {f.target} | {f.verdict(smoke)} |")
        lines.append("")
    return "\n".join(lines) + _analysis()


def verdicts(results: list[common.Result], smoke: bool) -> list[str]:
    """The ``## Verdicts`` part: every judged figure of this run, failures first."""
    judged = [(r.name, f) for r in results for f in r.figures if f.judged(smoke) is not None]
    failed = [(n, f) for n, f in judged if f.judged(smoke) is False]
    lines = [
        "## Verdicts of this run",
        "",
        f"{len(judged) - len(failed)} of {len(judged)} judged figures PASS"
        + (f"; {len(failed)} FAIL:" if failed else "."),
        "",
    ]
    for name, f in sorted(judged, key=lambda nf: nf[1].judged(smoke) is not False):
        value = f"{common.Figure.format_value(f.value)} {f.unit}"
        lines.append(f"- {f.verdict(smoke)}: {name}: {f.name.strip()} = {value} ({f.target})")
    return [*lines, ""]


def _analysis() -> str:
    """The hand-written ``## Analysis`` part of the current RESULTS.md, kept across re-runs."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    at = text.find("\n## Analysis")
    return text[at:] if at >= 0 else ""


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print a summary; 1 if a judged figure failed."""
    parser = argparse.ArgumentParser(description="run every benchmark of session_fsm")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, timings not judged")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), default=None)
    parser.add_argument("--write-results", action="store_true", help=f"rewrite {RESULTS.name}")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    t0 = time.perf_counter()
    results = run_all(names, args.smoke)
    failed = [(r.name, f.name) for r in results for f in r.failed(args.smoke)]
    info = machine()
    print(
        f"\n{len(results)} benchmarks in {time.perf_counter() - t0:.0f} s on {info['nproc']} "
        f"CPUs ({info['cpu']}), Python {info['python']}, load {info['load']}"
    )
    for name, figure in failed:
        print(f"FAIL {name}: {figure}")
    if not failed:
        print("all judged figures PASS" + (" (smoke: timings not judged)" if args.smoke else ""))
    if args.write_results:
        RESULTS.write_text(markdown(results, info, args.smoke))
        print(f"wrote {RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
