"""The security review's report attacks, each reproduced through the CLI or the HTTP endpoint.

See ../shared/reference/security-review.md: nested zips (#1), poisoned batches (#2),
forged reports (#3), stored amplification (#4), terminal and CSV injection (#21, #22),
Maildir symlinks (#23).
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from .conftest import MTASTS
from .test_reports_ingest import report, run


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def _peak_rss_mib(*args: str, db: str) -> tuple[float, str]:
    """Run ``mtasts reports ARGS`` in a child and return its peak RSS, read by the parent."""
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(p.stdout + p.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, MTASTS, "reports", *args, "--db", db],
                          capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    first, _, rest = done.stdout.partition("\n")
    return int(first) / 1024, rest


def test_nested_zips_share_one_budget(tmp_path: Path) -> None:
    """#1: 300 inner zips of 1 MiB each in a 1 MiB-capped mail once held 300 MiB."""
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    inner = _zip({"r.json": b"{" + b" " * ((1 << 20) - 100) + b"}"})
    bomb = _zip({f"inner{i}.zip": inner for i in range(300)})
    path = tmp_path / "bomb.zip"
    path.write_bytes(bomb)
    assert len(bomb) < 2 << 20
    peak, output = _peak_rss_mib("ingest", "--max-report-size", "1M", str(path), db=db)
    assert "quarantined" in output
    assert "report.too-large" in output or "report.zip-nested" in output
    assert peak < 150, f"peak RSS {peak:.0f} MiB for a 1 MiB cap"


def test_zip_is_expanded_one_level(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    path = tmp_path / "nested.zip"
    path.write_bytes(_zip({"inner.zip": _zip({"a.json": report("a")})}))
    done = run("ingest", str(path), db=db)
    assert "quarantined 1" in done.stdout
    assert "is itself a zip" in done.stdout + done.stderr
    assert "[report.zip-nested]" in done.stdout + done.stderr


def test_budget_is_shared_by_the_zip_members(tmp_path: Path) -> None:
    """Each member is under the cap, together they are over it: the input is refused."""
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    members = {}
    for i in range(4):
        big = json.loads(report(f"x{i}"))
        big["padding"] = "p" * 400_000
        members[f"m{i}.json.gz"] = gzip.compress(json.dumps(big).encode())
    path = tmp_path / "four.zip"
    path.write_bytes(_zip(members))
    done = run("ingest", "--max-report-size", "1M", str(path), db=db)
    out = done.stdout + done.stderr
    assert "past 1,048,576 bytes of reports in all" in out
    assert "stored 2, duplicates 0, quarantined 2" in out  # the first two fit and are kept
