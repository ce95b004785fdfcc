"""`userboard bench --quick` as a smoke test: it runs and reports every section in the
documented shape (the views section on a 20,000-user table). Its numbers are never asserted
(speed claims live in docs/benchmarks.md). Also the child-process helper that the bench and
tests/helpers.py share."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from userboard.bench.processes import ChildProcess


def test_quick_bench_reports_every_section(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERBOARD_")}
    env["TMPDIR"] = str(tmp_path)  # its servers' databases with the suite's other files
    done = subprocess.run(
        [sys.executable, "-m", "userboard.cli", "bench", "--quick", "--json", str(out),
         "--plot", str(tmp_path / "plot.png")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| figure | result | baseline | ratio | target | met |" in done.stdout
    results = json.loads(out.read_text())
    for section in ("latency", "fanout", "connections", "write_cost", "poller", "views", "outside",
                    "logins", "relay", "summary"):
        assert section in results, section
    latency_keys = {"clients", "p50_ms", "p99_ms", "max_ms", "last_client_p50_ms"}
    for kind in ("userboard", "baseline"):
        for stats in results["latency"][kind]:
            assert latency_keys.issubset(stats)
            assert stats["deliveries"] > 0 and not math.isnan(stats["p50_ms"])
    assert results["fanout"]["userboard"]["deliveries_per_s"] > 0
    assert "kb_per_connection" in results["connections"]["userboard"]
    assert {"on", "off", "added_p50_us"} <= set(results["write_cost"]["sqlite"]["commit"])
    assert results["poller"]["poller"]["bytes_per_change"] > 0
    views = results["views"]["sqlite"]
    assert views["seeding"]["totals"]["equal"], views["seeding"]["totals"]
    assert views["dashboard"]["rows"] == 50
    for name, case in views["api"].items():
        assert case["rows"] > 0 and case["total"] >= case["rows"], name
        assert {"p50_ms", "p95_ms"} <= set(case["api"]) and "what" in case["baseline"], name
        assert case["plans"]["view"] and all(case["plans"]["baseline"]), name
    live = views["live"]
    for kind in ("views", "whole_table"):
        assert live[kind]["deliveries"] > 0 and not math.isnan(live[kind]["p50_ms"]), kind
    assert live["memory"]["connected"] == {"whole_table": live["memory"]["clients"],
                                           "views": live["memory"]["clients"]}
    outside = results["outside"]["sqlite"]
    for path in ("outside", "api"):
        assert outside["latency"][path]["deliveries"] > 0, path
    assert outside["trigger_cost"]["logged"] > 0 and outside["trigger_cost"]["skipped"] > 0
    logins = results["logins"]
    for phase in ("no_logins", "logins_off_loop", "logins_on_loop"):
        assert logins[phase]["deliveries"] > 0 and not math.isnan(logins[phase]["p99_ms"]), phase
    for phase in ("logins_off_loop", "logins_on_loop"):
        assert logins[phase]["logins"] > 0 and logins[phase]["failed"] == 0, phase
    relay = results["relay"]["sqlite"]
    for path in ("relay", "redis")[:1 if "skipped" in relay["redis"] else 2]:  # both reached all
        assert relay[path]["complete"] and relay[path]["deliveries"] == relay[path]["expected"] > 0
        assert relay[path]["events_per_s"] > 0, path
    figures = [row["figure"] for row in results["summary"]]
    assert any(f.startswith("latency p50") for f in figures)
    assert any(f.startswith("memory per idle connection") for f in figures)
    assert any(f.startswith("views (SQLite): commit to visible change") for f in figures)
    assert any(f.startswith("outside write to client p50 (sqlite)") for f in figures)
    assert any(f.startswith("socket latency p99 during") for f in figures)
    assert any(f.startswith("relay: a script's burst") for f in figures)
    for row in results["summary"]:
        assert set(row) == {"figure", "result", "baseline", "ratio", "target", "met", "unit"}
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_plot_needs_the_sections_it_draws(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERBOARD_")}
    done = subprocess.run(
        [sys.executable, "-m", "userboard.cli", "bench", "--quick", "--section", "views",
         "--plot", str(tmp_path / "plot.png")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert "--plot needs the latency and poller sections" in done.stderr
    assert not (tmp_path / "plot.png").exists()


def test_child_process_is_ready_at_its_ready_line_and_stop_releases_its_pipe():
    child = ChildProcess([sys.executable, "-c",
                          "import time; print('demo serving on', flush=True); time.sleep(60)"])
    assert child.popen.poll() is None and child.rss_kb() > 0
    child.stop()
    assert child.popen.returncode is not None and child.popen.stdout.closed
    assert child.lines == ["demo serving on\n"]


def test_child_process_that_exits_before_its_ready_line_fails_with_its_output():
    with pytest.raises(RuntimeError, match="did not start:\n.*no database here"):
        ChildProcess([sys.executable, "-c", "print('no database here')"])
