"""Training and detection stages as the CLI runs them, on synthetic features."""
import json

import pytest

from wtal.data.synthetic import write_feature_dataset
from wtal.pipeline.cli import main

SMALL = ["--set", "hidden=32", "--set", "batch_size=8"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat")
    feat, ann = write_feature_dataset(root, num_train=24, num_test=8, dim=32, length=(40, 80), seed=3)
    return feat, ann


def train(tmp, feat, ann, *extra):
    return main(["train", "--features", str(feat), "--annotations", str(ann), "--out", str(tmp), "--device", "cpu", *extra])


def test_same_seed_same_detections(tmp_path, data):
    feat, ann = data
    outs = []
    for name in ("a", "b"):
        assert train(tmp_path / name, feat, ann, "--model", "ecm", "--epochs", "3", "--seed", "7", *SMALL) == 0
        det = tmp_path / f"{name}.json"
        assert main(["detect", "--features", str(feat), "--checkpoint", str(tmp_path / name), "--out", str(det),
                     "--device", "cpu"]) == 0
        outs.append(json.loads(det.read_text())["results"])
    assert outs[0] == outs[1]
    assert len(outs[0]) == 8  # the validation subset, taken from the run's annotations


def test_val_fraction_selects_on_training_videos_only(tmp_path, data):
    feat, ann = data
    assert train(tmp_path / "r", feat, ann, "--model", "mil", "--epochs", "4", "--val-fraction", "0.25", *SMALL) == 0
    log = json.loads((tmp_path / "r" / "train_log.json").read_text())
    assert log["num_val_videos"] == 6 and log["num_train_videos"] == 18
    assert "carved from 'training'" in log["selection"]
    fixed = tmp_path / "fixed"
    assert train(fixed, feat, ann, "--model", "mil", "--epochs", "2", *SMALL) == 0
    assert json.loads((fixed / "train_log.json").read_text())["selection"].startswith("fixed epoch count")


def test_backtal_refuses_to_train_without_clicks(tmp_path, data, capsys):
    feat, ann = data
    assert train(tmp_path / "r", feat, ann, "--model", "backtal", "--epochs", "1") != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "clicks" in err and not (tmp_path / "r" / "checkpoint.pt").exists()


def test_backtal_trains_with_simulated_clicks(tmp_path, data):
    feat, ann = data
    clicks = tmp_path / "clicks.json"
    assert main(["clicks", "simulate", "--annotations", str(ann), "--out", str(clicks), "--seed", "1"]) == 0
    counts = json.loads(clicks.read_text())
    assert len(counts) == 24 and all(len(v) >= 1 for v in counts.values())
    assert train(tmp_path / "r", feat, ann, "--model", "backtal", "--epochs", "1", "--clicks", str(clicks), *SMALL) == 0
    assert (tmp_path / "r" / "checkpoint.pt").exists()


def test_several_click_files_need_an_annotator(tmp_path, data, capsys, shared_data):
    feat, ann = data
    files = [str(shared_data / "annotations" / "thumos14" / f"background_clicks_A{i}.csv") for i in (1, 2, 3)]
    assert train(tmp_path / "r", feat, ann, "--model", "backtal", "--epochs", "1", "--clicks", *files) != 0
    assert "annotator" in capsys.readouterr().err


def test_unknown_setting_is_a_one_line_error(tmp_path, data, capsys):
    feat, ann = data
    assert train(tmp_path / "r", feat, ann, "--model", "ecm", "--set", "hiden=3") != 0
    err = capsys.readouterr().err
    assert "hiden" in err and "hidden" in err


def test_detect_rejects_features_of_another_width(tmp_path, data, capsys):
    feat, ann = data
    assert train(tmp_path / "r", feat, ann, "--model", "mil", "--epochs", "1", *SMALL) == 0
    other, _ = write_feature_dataset(tmp_path / "other", num_train=2, num_test=2, dim=16)
    assert main(["detect", "--features", str(other), "--checkpoint", str(tmp_path / "r"), "--out",
                 str(tmp_path / "d.json"), "--annotations", str(tmp_path / "other" / "annotations.json")]) != 0
    assert "16-d" in capsys.readouterr().err


def test_standardize_keeps_training_statistics_for_detection(tmp_path, data):
    import numpy as np
    import torch

    from wtal.data.annotations import load_annotations
    from wtal.data.features import open_features
    from wtal.models.checkpoint import load_checkpoint
    from wtal.models.train import build_items, detect_videos, standardize

    feat, ann = data
    assert train(tmp_path / "r", feat, ann, "--model", "mil", "--epochs", "2", "--standardize", *SMALL) == 0
    model, payload = load_checkpoint(tmp_path / "r")
    annotations, features = load_annotations(ann), open_features(feat)
    train_x = np.concatenate([features.load(v.video_id) for v in annotations.subset("training")])
    np.testing.assert_allclose(payload["info"]["feature_mean"].numpy(), train_x.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(payload["info"]["feature_std"].numpy(), train_x.std(0), rtol=1e-3, atol=1e-5)
    det = tmp_path / "d.json"
    assert main(["detect", "--features", str(feat), "--checkpoint", str(tmp_path / "r"), "--out", str(det)]) == 0
    items = standardize(build_items(annotations, features, "validation"), payload["info"]["feature_mean"].numpy(),
                        payload["info"]["feature_std"].numpy())
    expected, _ = detect_videos(model, items, payload["test_config"], payload["class_names"], features.snippet_seconds,
                                torch.device("cpu"))
    got = json.loads(det.read_text())["results"]
    assert got == json.loads(json.dumps(expected))


def test_an_unknown_model_is_a_one_line_error_listing_every_registered_one(tmp_path, data, capsys):
    from wtal.models import REGISTRY

    feat, ann = data
    assert train(tmp_path / "r", feat, ann, "--model", "ecn") != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'ecn'" in err
    assert sorted(REGISTRY) == ["backtal", "basnet", "cleannet", "dgam", "ecm", "mil", "rskp"]
    assert all(name in err for name in REGISTRY)


def test_wtal_models_lists_every_model_and_one_models_settings(capsys):
    from wtal.models import REGISTRY, get_localizer

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + len(REGISTRY)  # header + one line per model
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert sorted(by_name) == sorted(REGISTRY)
    assert "clicks" in by_name["backtal"] and "clicks" not in by_name["ecm"] and "TPAMI 2022" in by_name["ecm"]
    assert main(["models", "ecm"]) == 0
    out = capsys.readouterr().out
    ecm = get_localizer("ecm")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    assert len(rows) == len(ecm.hparam_defaults()) + len(ecm.train_defaults) + len(ecm.test_defaults)
    assert rows["hidden"][1:3] == ["2048", "int"] and rows["epochs"][1:3] == ["150", "int"]
    assert rows["nms_threshold"][1:3] == ["0.6", "float"]
    assert out.index("model settings") < out.index("training settings") < out.index("test settings")


def test_help_imports_neither_torch_nor_ray():
    import subprocess
    import sys

    code = ("import sys\nfrom wtal.pipeline.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_detect_refuses_a_setting_it_would_ignore(tmp_path, data, capsys):
    feat, ann = data
    assert train(tmp_path / "r", feat, ann, "--model", "mil", "--set", "epochs=1", *SMALL) == 0
    capsys.readouterr()
    assert main(["detect", "--features", str(feat), "--checkpoint", str(tmp_path / "r"), "--out",
                 str(tmp_path / "d.json"), "--set", "hidden=8"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "hidden" in err and "model setting" in err and "detect" in err
    assert not (tmp_path / "d.json").exists()
    assert main(["detect", "--features", str(feat), "--checkpoint", str(tmp_path / "r"), "--out",
                 str(tmp_path / "d.json"), "--set", "nms_threshold=0.3"]) == 0
    assert (tmp_path / "d.json").exists()


def test_epochs_option_is_an_alias_of_set_epochs(tmp_path, data, capsys):
    feat, ann = data
    assert train(tmp_path / "a", feat, ann, "--model", "mil", "--epochs", "2", *SMALL) == 0
    assert train(tmp_path / "b", feat, ann, "--model", "mil", "--set", "epochs=2", *SMALL) == 0
    logs = [json.loads((tmp_path / r / "train_log.json").read_text()) for r in ("a", "b")]
    assert len(logs[0]["history"]) == len(logs[1]["history"]) == 2
    assert logs[0]["train_config"]["epochs"] == logs[1]["train_config"]["epochs"] == 2
    assert logs[0]["history"] == logs[1]["history"]
    assert train(tmp_path / "c", feat, ann, "--model", "mil", "--epochs", "2", "--set", "epochs=3", *SMALL) != 0
    assert "disagree" in capsys.readouterr().err


def test_every_command_and_option_is_documented_with_its_default():
    import argparse

    from wtal.pipeline.cli import build_parser

    undocumented, pages = [], {}

    def walk(parser, name):
        pages[name] = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(child, f"{name} {sub}")
            elif not action.help:
                undocumented.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "wtal")
    assert undocumented == []
    assert "extract" in " ".join(pages) and len(pages) >= 11
    squeeze = " ".join(pages["wtal extract"].split())
    assert "(default: 25.0)" in squeeze and "(default: 8 on CPU, 32 on CUDA)" in squeeze and "(default: fp32)" in squeeze
    assert "(default: 0)" in " ".join(pages["wtal clicks simulate"].split())
