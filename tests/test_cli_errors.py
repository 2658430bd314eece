"""The CLI prints one line for a user's error (WtalError, OSError) and lets a bug raise."""
import subprocess
import sys

import pytest

import wtal.pipeline.cli as cli
from wtal.errors import SettingsError, WtalError
from wtal.evaluate.metrics import EvaluationError
from wtal.pipeline.cli import main

EVALUATE = ["evaluate", "--detections", "det.json", "--annotations", "ann.json"]


def _raise(exc):
    def cmd_evaluate(_args):
        raise exc

    return cmd_evaluate


@pytest.mark.parametrize("exc", [EvaluationError("det.json: results: not an object"),
                                 FileNotFoundError("det.json: no such file")])
def test_user_error_is_one_line(monkeypatch, capsys, exc):
    monkeypatch.setattr(cli, "cmd_evaluate", _raise(exc))
    assert main(EVALUATE) == 2
    err = capsys.readouterr().err
    assert err == f"error: {exc}\n"


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch in a matmul"), ValueError("a numpy bug"),
                                 KeyError("nms_threshold")])
def test_bug_keeps_its_traceback(monkeypatch, capsys, exc):
    monkeypatch.setattr(cli, "cmd_evaluate", _raise(exc))
    with pytest.raises(type(exc)) as info:
        main(EVALUATE)
    assert info.value is exc
    assert "error:" not in capsys.readouterr().err


def test_bug_prints_a_traceback_from_the_console(tmp_path):
    script = ("import sys, wtal.pipeline.cli as cli\n"
              "def boom(args): raise RuntimeError('a real bug')\n"
              "cli.cmd_evaluate = boom\n"
              "sys.exit(cli.main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", script, *EVALUATE], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().endswith("RuntimeError: a real bug")


def test_settings_and_unavailable_errors_are_user_errors():
    from wtal.device import resolve_device
    from wtal.models import get_localizer, split_settings

    with pytest.raises(SettingsError, match="device: expected"):
        resolve_device("tpu")
    with pytest.raises(SettingsError, match="unknown model 'nope'"):
        get_localizer("nope")
    with pytest.raises(SettingsError, match="--set hiden: not a setting of ecm"):
        split_settings(get_localizer("ecm"), {"hiden": "3"})
    assert issubclass(SettingsError, WtalError) and issubclass(SettingsError, ValueError)
