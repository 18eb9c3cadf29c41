#!/usr/bin/env python
"""Content digests of a run folder: record them, check a run against them, or compare two runs.

    python tools/run_digests.py RUN_DIR --write tests/golden/tiny_run_digests.json
    python tools/run_digests.py RUN_DIR --check tests/golden/tiny_run_digests.json
    python tools/run_digests.py RUN_DIR --compare OTHER_RUN_DIR

RUN_DIR is results/<run>. What is hashed per file type: conta_core/report/run_digest.py. The
golden file of the tests (tests/golden/tiny_run_digests.json) holds the digests of the tiny
end-to-end run (.test/config.yaml, `round2`) and the machine fingerprint they were taken
on; tests/test_workflow.py checks every tiny run against it. After a change that is MEANT
to change results, re-record it (`--write`, from the tiny run of `pytest -k digests
--basetemp /tmp/t`, folder /tmp/t/tiny_run0/results/tiny) and say why in the commit.
Exit status 1 when --check or --compare finds a difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from conta_core.report.run_digest import compare, machine_fingerprint, run_digests


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", type=Path, help="record the digests and the machine fingerprint")
    g.add_argument("--check", type=Path, help="compare with a recorded digest file")
    g.add_argument("--compare", type=Path, help="compare with another run folder")
    a = p.parse_args()
    if not a.run_dir.is_dir():
        raise SystemExit(f"{a.run_dir}: not a run folder")
    digests = run_digests(a.run_dir)
    if a.write:
        a.write.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.write.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"machine": machine_fingerprint(), "files": digests}, indent=1, sort_keys=True) + "\n"
        )
        tmp.replace(a.write)
        print(f"wrote {a.write}: {len(digests)} files")
        return
    other = json.loads(a.check.read_text())["files"] if a.check else run_digests(a.compare)
    diff = compare(digests, other)
    for key, label in (
        ("only_a", f"only in {a.run_dir}"),
        ("only_b", f"only in {a.check or a.compare}"),
        ("differ", "content differs"),
    ):
        for rel in diff[key]:
            print(f"{label}: {rel}")
    n = sum(len(v) for v in diff.values())
    print(f"{len(digests)} files, {n} differences")
    sys.exit(1 if n else 0)


if __name__ == "__main__":
    main()
