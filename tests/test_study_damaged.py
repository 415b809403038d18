"""Damaged error.json and claim files never stop `study --status` or the runner: each is named in one
warning line; a damaged error.json reads as failed, an empty or damaged claim as dead after a short grace."""
from __future__ import annotations

import os
import time

from test_study_backends import make_study

from manifold_lab import io
from manifold_lab.cli import main
from manifold_lab.studies import claims, results


def _done(study, rid, x):
    io.write_json(study / rid / "metrics.json", {"y": x * x})
    io.write_json(study / rid / "run.json", {"run_id": rid, "wall_s": 3.0, "params": {
        "x": x, "sleep_s": 0.0, "log": str(study.parent.parent / "runs.log")}})


def test_read_json_or_warn_names_the_file_once(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{half")
    (tmp_path / "list.json").write_text("[1]")
    assert io.read_json_or_warn(tmp_path / "absent.json") is None
    assert io.read_json_or_warn(tmp_path / "bad.json", consequence="skipped") is None
    assert io.read_json_or_warn(tmp_path / "bad.json", consequence="skipped") is None
    assert io.read_json_or_warn(tmp_path / "list.json") is None
    assert io.read_json_or_warn(tmp_path / "list.json", expect=list) == [1]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "bad.json is damaged (JSONDecodeError" in err[0] and err[0].endswith("skipped")
    assert "list.json is damaged (holds list, not dict)" in err[1]


def test_status_survives_damaged_files_and_a_read_only_folder(tmp_path, capsys, monkeypatch):
    spec, study = make_study(tmp_path, range(4)), tmp_path / "results" / "square"
    _done(study, "x00", 0)
    partial = results.partial_dir(study, "x01")
    partial.mkdir(parents=True)
    (partial / "error.json").write_text('{"error": "Runtime')             # cut short
    claims.claim_path(study, "x02").write_text("")                        # an empty claim, 60 s old
    old = time.time() - 60
    os.utime(claims.claim_path(study, "x02"), (old, old))
    claims.claim_path(study, "x03").write_text("")                        # an empty claim being written now

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied", str(study / "summary.csv"))
    monkeypatch.setattr(results, "write_summary", read_only)
    capsys.readouterr()
    assert main(["study", str(spec), "--results-dir", str(tmp_path / "results"), "--status"]) == 0
    cap = capsys.readouterr()
    lines = dict(line.split(None, 1) for line in cap.out.strip().splitlines()[:-1])
    assert lines["x00"].startswith("done") and lines["x01"].split()[:3] == ["failed", "error.json", "damaged"]
    assert lines["x02"].startswith("pending") and "damaged" in lines["x02"]
    assert lines["x03"].startswith("running")                            # within the grace: being written
    warnings = cap.err.strip().splitlines()
    assert len(warnings) == 3, warnings
    assert any(".x01.partial/error.json is damaged" in w for w in warnings)
    assert any(".x02.claim is damaged (empty); treated as dead" in w for w in warnings)
    assert any("summary and figures were not written (Permission denied" in w for w in warnings)


def test_a_damaged_claim_is_taken_over_after_the_grace(tmp_path):
    path = claims.claim_path(tmp_path, "p")
    path.write_text("{not json")
    owner = claims.this_owner()
    assert not claims.try_claim(tmp_path, "p", owner)                     # just written: maybe being written
    old = time.time() - claims.WRITE_GRACE_S - 1
    os.utime(path, (old, old))
    assert claims.try_claim(tmp_path, "p", owner)
    assert claims.read_claim(path)["token"] == owner["token"]


def test_bad_workers_is_one_line_and_creates_nothing(tmp_path, capsys):
    spec = make_study(tmp_path, [1])
    for bad in ("0", "-3"):
        capsys.readouterr()
        assert main(["study", str(spec), "--results-dir", str(tmp_path / "results"), "--workers", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: --workers must be a positive integer (runs at once), got {bad}"]
        assert not (tmp_path / "results").exists()
