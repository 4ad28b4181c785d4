"""What `dbguard validate` costs per process: it imports neither pydantic nor yaml (no config file) nor Dagster,
pandas or Great Expectations, gives an in-process caller its garbage collector back (on, nothing frozen), and
its JSON writer gives json.dumps' text without listing every piece first."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from dbguard_pipeline.report.json import dumps


def test_dumps_is_json_dumps_text():
    doc = {
        "a": [1, 2.5, None, True, 'é\u2028x\n"', {"b": {}, "c": []}],
        "nan": float("nan"),
        "obj": object.__new__(type("Thing", (), {"__str__": lambda self: "thing"})),
        "nested": [[{"k": [1, {"z": "ü"}]}]],
    }
    for d in (doc, "text", 5, [], {}, None):
        assert dumps(d) == json.dumps(d, indent=2, ensure_ascii=False, default=str) + "\n"


def test_validate_imports_only_what_it_needs(demo_dsn, tmp_path):
    out = tmp_path / "r.json"
    code = (
        "import gc, sys; from dbguard_pipeline import cli; "
        f"code = cli.main(['validate', '--dsn', {demo_dsn!r}, '--no-data', '--format', 'json', '--out', {str(out)!r}]); "
        "heavy = [m for m in ('pydantic', 'yaml', 'dagster', 'pandas', 'great_expectations') if m in sys.modules]; "
        "assert gc.isenabled() and gc.get_freeze_count() == 0, 'the collector is not given back'; "
        "print(code, ','.join(heavy))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, check=True, timeout=120
    )
    code_, _, heavy = proc.stdout.strip().rpartition("\n")[2].partition(" ")
    assert code_ in ("0", "1") and heavy == "", proc.stdout + proc.stderr
    assert json.loads(out.read_text())["findings"]
