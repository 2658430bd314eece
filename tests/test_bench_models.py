"""bench/models.py's command line: a per-model `--set` reaches that model's run and no other;
a bad one stops the benchmark before any training."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "models.py"), "--quick", "--scale", "0.05",
                           "--max-epochs", "3", "--seeds", "0", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)


def test_set_changes_one_model_only(tmp_path):
    out = tmp_path / "runs.json"
    done = bench("--models", "ecm", "--set", "ecm:aggregate=mean", "--set", "ecm:hidden=24", "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert "--set aggregate=mean hidden=24: not paper settings" in done.stdout
    saved = json.loads(out.read_text())
    assert f"(code {saved['code']})" in done.stdout  # the file names the commit the run printed at its start
    ecm, mil = saved["runs"]["ecm"][0]["used"], saved["runs"]["mil"][0]["used"]
    assert ecm["model"]["aggregate"] == "mean" and ecm["model"]["hidden"] == 24
    assert ecm["train"]["epochs"] == 3  # the reduction still applies
    assert mil["model"]["hidden"] == 512 // 16 and "aggregate" not in mil["model"]


def test_bad_set_is_a_usage_error_before_training():
    for arg, message in [("aggregate=mean", "expected MODEL:KEY=VALUE"),
                         ("dgam:cvae_steps=0", "dgam is not among this run's models"),
                         ("ecm:nope=1", "not a setting of ecm"),
                         ("ecm:hidden=wide", "expected int"),
                         ("ecm:aggregate=median", "choose one of sum, mean")]:
        done = bench("--models", "ecm", "--set", arg)
        assert done.returncode == 2 and message in done.stderr, (arg, done.stderr)
        assert "seed 0:" not in done.stdout, arg
