"""wtal.models.checkpoint: a checkpoint that cannot be used fails with CheckpointError naming the
file and the field (the round trip itself is in test_localizer_contract.py)."""
import pytest
import torch

from wtal.errors import WtalError
from wtal.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from wtal.models.mil import MIL


@pytest.fixture
def saved(tmp_path):
    """A real MIL checkpoint and its payload."""
    path = save_checkpoint(tmp_path / "run", MIL(6, 2, hidden=8), ["a", "b"], {}, {}, 0.64)
    return path, torch.load(path, weights_only=True)


def fails(path, message):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert isinstance(err.value, WtalError)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


def test_a_saved_checkpoint_loads(saved):
    path, _ = saved
    model, payload = load_checkpoint(path.parent)
    assert model.name == "mil" and payload["class_names"] == ["a", "b"] and not model.training


def test_missing_corrupt_or_non_dict_checkpoints_name_the_file(saved, tmp_path):
    path, payload = saved
    fails(tmp_path / "absent", "no checkpoint (expected a run directory with checkpoint.pt or the file)")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    fails(truncated, "wtal checkpoint: not a readable torch file (")
    text = tmp_path / "text.pt"
    text.write_text("format = wtal-checkpoint-v1\n")
    fails(text, "wtal checkpoint: not a readable torch file (")
    listing = tmp_path / "list.pt"
    torch.save([payload], listing)
    fails(listing, "wtal checkpoint: expected a dict, got list")


@pytest.mark.parametrize("changes, message", [
    ({"state_dict": None, "hparams": None}, "wtal checkpoint: missing field(s) hparams, state_dict"),
    ({"format": "wtal-checkpoint-v0"}, "field 'format' is 'wtal-checkpoint-v0', expected 'wtal-checkpoint-v1'"),
    ({"model": "nosuchmodel"}, "field 'model': "),
    ({"feature_dim": 7}, "field 'state_dict' does not match mil: size mismatch for head.net.0.weight"),
    ({"state_dict": {}}, "field 'state_dict' does not match mil: missing ['head.net.0.weight'"),
    ({"state_dict": 3}, "field 'state_dict': expected dict, got int"),
    ({"hparams": [("hidden", 8)]}, "field 'hparams': expected dict, got list"),
    ({"class_names": "ab"}, "field 'class_names': expected list, got str"),
    ({"feature_dim": 6.0}, "field 'feature_dim': expected int, got float"),
    ({"hparams": {"hidden": 8, "width": 3, "depth": 1}},
     "field 'hparams': depth, width not among mil's settings (dropout, hidden, topk_fraction)"),
])
def test_a_bad_field_is_named(saved, tmp_path, changes, message):
    _, payload = saved
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    fails(path, message)
