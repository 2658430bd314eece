"""Dataset presets (issue 12 section 4): thumos14 equals today's defaults, every value cites its
source, ActivityNet values reach the settings, unpublished values fall back to THUMOS14."""
import pytest

from wtal.models import get_localizer, split_settings
from wtal.models.presets import (
    NOT_PUBLISHED,
    PRESET_NAMES,
    PRESETS,
    format_preset,
    preset_overrides,
    preset_table,
    preset_tiou,
)

MODELS = sorted(PRESETS)


def _defaults(name):
    hp, train, test = split_settings(get_localizer(name), None)
    return {**hp, **train, **test}


@pytest.mark.parametrize("name", MODELS)
def test_thumos14_preset_equals_todays_defaults(name):
    defaults = _defaults(name)
    for key, value in preset_overrides(name, "thumos14").items():
        assert key in defaults, f"{name}: {key} is not a setting"
        assert defaults[key] == (tuple(value) if isinstance(value, tuple) else value), f"{name}: {key}"


@pytest.mark.parametrize("name", MODELS)
def test_every_preset_value_is_a_setting_and_cites_its_source(name):
    defaults = _defaults(name)
    for preset in PRESET_NAMES:
        for key, (value, source) in PRESETS[name][preset].items():
            assert key == "tiou" or key in defaults, f"{name} {preset}: {key} is not a setting"
            assert "paper" in source or "/" in source, f"{name} {preset} {key}: {source!r} cites nothing"
        split_settings(get_localizer(name), preset_overrides(name, preset))  # every value is accepted


def test_activitynet_values_reach_the_settings():
    _, train, test = split_settings(get_localizer("ecm"), preset_overrides("ecm", "activitynet13"))
    hp, _, _ = split_settings(get_localizer("ecm"), preset_overrides("ecm", "activitynet13"))
    assert hp["topk_fraction"] == 0.6 and hp["a2c_weight"] == 1.0
    assert (train["max_len"], train["batch_size"], train["epochs"], train["lr_decay_epochs"]) == (100, 128, 36, (26,))
    assert (test["class_threshold"], test["cas_thresholds"], test["nms_threshold"]) == (0.05, (0.0, 0.175, 0.025), 0.7)
    # --set still wins over the preset
    _, train, _ = split_settings(get_localizer("ecm"), {**preset_overrides("ecm", "activitynet13"), "epochs": "3"})
    assert train["epochs"] == 3
    assert preset_tiou("ecm", "activitynet13") == "0.5:0.95:0.05" and preset_tiou("dgam", "thumos14") == "0.1:0.9:0.1"


def test_unpublished_values_print_as_not_published_and_fall_back_to_thumos14():
    rows = {k: (v, s) for k, v, s in preset_table("backtal", "activitynet13", _defaults("backtal"))}
    assert rows["epochs"] == (100, f"{NOT_PUBLISHED} (THUMOS14 value)")
    assert rows["tiou"][1].startswith(NOT_PUBLISHED) and preset_tiou("backtal", "activitynet13") == "0.5:0.95:0.05"
    assert preset_overrides("backtal", "activitynet13") == {}
    dgam = {k: (v, s) for k, v, s in preset_table("dgam", "activitynet12", _defaults("dgam"))}
    assert dgam["epochs"] == (6000, f"{NOT_PUBLISHED} (THUMOS14 value)")
    assert dgam["threshold_smoothing"][0] == 25.0 and "gaussian_filter1d" in dgam["threshold_smoothing"][1]
    lines = format_preset("dgam", "activitynet12", _defaults("dgam"))
    assert lines[0] == "dgam --preset activitynet12" and any("note: " in line for line in lines)
    with pytest.raises(ValueError, match="--preset kinetics"):
        preset_overrides("ecm", "kinetics")


def test_train_records_the_preset(tmp_path):
    import json

    import torch

    from wtal.data.synthetic import write_feature_dataset
    from wtal.pipeline.cli import main

    feat, ann = write_feature_dataset(tmp_path / "data", num_train=6, num_test=2, dim=16, length=(20, 30), seed=1)
    run = tmp_path / "run"
    assert main(["train", "--features", str(feat), "--annotations", str(ann), "--out", str(run), "--device", "cpu",
                 "--model", "ecm", "--preset", "activitynet13", "--set", "hidden=8", "--set", "epochs=1",
                 "--set", "batch_size=4"]) == 0
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    assert payload["info"]["preset"] == "activitynet13" and payload["info"]["preset_tiou"] == "0.5:0.95:0.05"
    assert payload["hparams"]["topk_fraction"] == 0.6 and payload["train_config"]["lr_decay_epochs"] == (26,)
    assert payload["train_config"]["epochs"] == 1 and payload["test_config"]["class_threshold"] == 0.05
    log = json.loads((run / "train_log.json").read_text())
    assert log["preset"]["name"] == "activitynet13" and log["preset"]["values"]["max_len"] == 100


def test_wtal_models_prints_a_preset_with_sources(capsys):
    from wtal.pipeline.cli import main

    assert main(["models", "backtal", "--preset", "activitynet13"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("backtal --preset activitynet13")
    assert "not published (THUMOS14 value)" in out and "epochs" in out
    assert main(["models", "ecm", "--preset", "activitynet13"]) == 0
    out = capsys.readouterr().out
    assert "experiments/ActivityNet1.3.yaml" in out and "0.6" in out
    assert main(["models", "--preset", "thumos14"]) != 0
