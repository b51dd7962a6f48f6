"""The PASS/FAIL report the protocol benchmarks end with."""


def report(checks, quick=False) -> int:
    """Print ``PASS|FAIL  name: value`` for each ``(name, ok, value)``; the exit status (1 if any check
    failed, except for a ``--quick`` run, whose targets are shown for information only)."""
    if quick:
        print("(--quick: not the protocol; targets shown for information)")
    failed = 0
    for name, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
        failed += not ok
    return 1 if failed and not quick else 0
