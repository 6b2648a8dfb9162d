"""tools/bench_settings.py (the README's "Choosing settings" table) end to end with tiny sizes:
every row it names exists and builds valid options, and one run moves the bytes intact (the
receiver's sha256 must match, or the run raises). Figures are measured, never asserted."""
from __future__ import annotations

import json

import kcpgo
from tools import bench_settings


def test_every_row_builds_valid_options():
    for name, (client, server, what) in bench_settings.SETTINGS.items():
        kcpgo.Options(**bench_settings._options(client))
        kcpgo.Options(**bench_settings._options(server))
        assert what, name


def test_one_run_per_row_json(capsys):
    assert bench_settings.main(["--rows", "defaults,tuned-aes-fec", "--mb", "0.2", "--runs",
                                "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["rows"]) == ["defaults", "tuned-aes-fec"]
    for row in doc["rows"].values():
        assert row["median_MBps"] > 0 and len(row["runs_MBps"]) == 1
