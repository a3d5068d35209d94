#!/usr/bin/env python3
"""Summarise critest runs: per handler the pass/fail/skip counts and wall time, the pass
lists, and the specs that pass with the reference handler (the first) but not with another.

    python3 conformance/report.py [--strict] HANDLER=REPORT.json[:SECONDS] ...

REPORT.json is ginkgo v2's --ginkgo.json-report output; SECONDS the run's wall time as the
caller measured it (critest's own start-up and image pulls included). With --strict the
exit status is 1 when a spec passes with the reference handler only.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Run:
    handler: str
    seconds: float
    states: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


def spec_name(spec: dict) -> str:
    parents = spec.get("ContainerHierarchyTexts") or []
    return " ".join([*parents, spec.get("LeafNodeText", "")])


def load(arg: str) -> Run:
    handler, _, rest = arg.partition("=")
    path, _, seconds = rest.partition(":")
    run = Run(handler, float(seconds or 0))
    for suite in json.loads(Path(path).read_text()):
        for spec in suite.get("SpecReports") or []:
            if spec.get("LeafNodeType") != "It":
                continue
            name = spec_name(spec)
            run.states[name] = spec.get("State", "?")
            failure = spec.get("Failure") or {}
            message = " ".join(str(failure.get("Message", "")).split())
            where = (failure.get("Location") or {}).get("FileName", "").rpartition("/")[2]
            line = (failure.get("Location") or {}).get("LineNumber", "")
            if message:
                run.reasons[name] = f"{message[:400]} [{where}:{line}]"
    return run


def counts(run: Run) -> str:
    tally: dict[str, int] = {}
    for state in run.states.values():
        tally[state] = tally.get(state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(tally.items()))


def main(argv: list[str]) -> int:
    strict = "--strict" in argv
    argv = [arg for arg in argv if arg != "--strict"]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    runs = [load(arg) for arg in argv]
    missing = 0
    ref = runs[0]
    for run in runs:
        print(f"== {run.handler}: {counts(run)}; wall time {run.seconds:.0f} s")
    for run in runs:
        passed = sorted(n for n, s in run.states.items() if s == "passed")
        print(f"\n== passed with {run.handler} ({len(passed)})")
        for name in passed:
            print(f"  {name}")
    for run in runs[1:]:
        only = sorted(n for n, s in ref.states.items()
                      if s == "passed" and run.states.get(n) != "passed")
        missing += len(only)
        ratio = run.seconds / ref.seconds if ref.seconds else float("nan")
        print(f"\n== pass with {ref.handler} but not with {run.handler} ({len(only)}); "
              f"time {run.seconds:.0f} s vs {ref.seconds:.0f} s = {ratio:.2f}x")
        for name in only:
            print(f"  {name}  [{run.states.get(name, 'not run')}]")
            if name in run.reasons:
                print(f"      {run.reasons[name]}")
    return 1 if strict and missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
