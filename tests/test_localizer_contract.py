"""The contract every registered localizer keeps, generated from the registry (a new model is
tested without a new test file): output shapes, padded snippets that change nothing, finite
losses that each reach the parameters, very short videos, any feature width, hparams and a
checkpoint round trip. Per-model files keep only their method-specific checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wtal.models import REGISTRY, split_settings
from wtal.models.checkpoint import load_checkpoint, save_checkpoint
from wtal.postprocess.proposals import VIDEO_FRAMES_PER_SNIPPET, VIDEO_SNIPPET_SECONDS

from helpers import junk_padding, tiny_batch

# narrow widths so every model runs in well under a second; a model missing here runs with its defaults
SMALL = {
    "mil": {"hidden": 16},
    "ecm": {"hidden": 16},
    "basnet": {"hidden": 16, "filter_hidden": 8},
    "backtal": {"hidden": 16, "filter_hidden": 8, "embed_hidden": 8},
    "rskp": {"warmup": 1},
    "dgam": {"attention_hidden": 16, "latent_dim": 8, "cvae_hidden": 16},
    "cleannet": {"hidden": 8},
}
# the per-video time base detect_videos adds (16-frame snippets at 25 fps): frame-level CAS upsampling needs it
TIME_BASE = {VIDEO_SNIPPET_SECONDS: 0.64, VIDEO_FRAMES_PER_SNIPPET: 16.0}
LATE = 1000  # an epoch past every warm-up and training stage
NAMES = sorted(REGISTRY)


def build(name: str, dim: int, classes: int, seed: int = 0):
    torch.manual_seed(seed)
    settings = dict(SMALL.get(name, {}))
    if name == "dgam" and dim % 2:  # DGAM refuses to split an odd width into rgb | flow (tests/test_dgam.py)
        settings["two_stream"] = "false"
    hparams, _, _ = split_settings(REGISTRY[name], settings)
    return REGISTRY[name](dim, classes, **hparams)


def batch_of(lengths, dim, classes, seed=0):
    """A padded batch with background clicks on snippets 0 and 2 of every video (where they fit)."""
    batch = tiny_batch(lengths, dim, classes, seed=seed, clicks=((0, 2),))
    batch["lengths"] = torch.tensor(lengths)
    batch["video_ids"] = [f"v{b}" for b in range(len(lengths))]
    return batch


def late_losses(model, batch):
    """Loss terms at a late epoch, after an epoch end (memory banks filled, every stage on)."""
    model.on_epoch_end(LATE, lambda: iter([batch]))
    model.train()
    return model.compute_losses(batch, LATE)


def test_the_registry_holds_every_model_with_a_paper_and_one_group_per_setting():
    assert NAMES == ["backtal", "basnet", "cleannet", "dgam", "ecm", "mil", "rskp"]
    for name, cls in REGISTRY.items():
        assert cls.name == name and cls.paper
        names = [*cls.hparam_defaults(), *cls.train_defaults, *cls.test_defaults]
        assert len(names) == len(set(names)), name


def test_register_refuses_empty_and_duplicate_names():
    from wtal.models import Localizer, register

    class Nameless(Localizer):
        pass

    with pytest.raises(TypeError, match="non-empty"):
        register(Nameless)

    class Twice(Localizer):
        name = "ecm"

    with pytest.raises(TypeError, match="registered twice"):
        register(Twice)
    assert REGISTRY["ecm"].__name__ == "ECM"


@pytest.mark.parametrize("name", NAMES)
def test_outputs_and_inference_have_the_declared_shapes(name):
    model = build(name, 12, 4).eval()
    batch = batch_of([7, 10], 12, 4)
    with torch.no_grad():
        out = model(batch["features"], batch["mask"])
    assert out and all(v.shape[0] == 2 for v in out.values())
    inference = model.infer(torch.randn(13, 12))
    assert inference.cas.shape == (13, 4) and inference.video_scores.shape == (4,)
    assert inference.cas.dtype == np.float32 and 0 <= inference.cas.min() and inference.cas.max() <= 1
    assert 0 <= inference.video_scores.min() and inference.video_scores.max() <= 1
    proposals, _ = model.detect(torch.randn(13, 12), {**type(model).test_defaults, **TIME_BASE, "class_threshold": 0.0})
    assert proposals and all(0 <= p.label < 4 and 0 <= p.start < p.end <= 13 for p in proposals)


def _time_slices(padded: torch.Tensor, alone: torch.Tensor, length: int) -> torch.Tensor:
    """`padded` cut to `length` on every axis where it is padded-long and `alone` is length-long."""
    assert padded.dim() == alone.dim()
    index = []
    for p, a in zip(padded.shape, alone.shape):
        assert p == a or a == length, (padded.shape, alone.shape)
        index.append(slice(0, a))
    return padded[tuple(index)]


@pytest.mark.parametrize("name", NAMES)
def test_padded_snippets_change_no_output(name):
    model = build(name, 16, 4).eval()
    batch = batch_of([5, 11], 16, 4, seed=3)
    with torch.no_grad():
        padded = model(junk_padding(batch["features"], 5), batch["mask"])
        alone = model(batch["features"][:1, :5])
    assert set(padded) == set(alone)
    for key in padded:
        assert torch.allclose(_time_slices(padded[key][:1], alone[key], 5), alone[key], atol=1e-5), key


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_term_is_finite_and_reaches_the_parameters(name):
    model = build(name, 12, 4)
    losses = late_losses(model, batch_of([9, 14], 12, 4))
    assert "total" in losses and len(losses) >= 2
    params = [p for p in model.parameters() if p.requires_grad]
    for key, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), key
        # every term is connected to some parameter (an L1 term may have a zero gradient at a given
        # point); a term with nothing to act on in this batch (CleanNet's regression without a
        # positive proposal) may be a constant zero
        if not value.requires_grad:
            assert value.item() == 0.0, f"{key} is not computed from the parameters"
            continue
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        assert any(g is not None for g in grads), f"{key} does not reach any parameter"
        if key == "total":
            assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    step = model.fit_step(batch_of([9, 14], 12, 4), model.make_optimizers(type(model).train_defaults), LATE)
    assert all(np.isfinite(v) for v in step.values())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("lengths", [[1], [2], [3], [1, 3], [2, 9]])
def test_very_short_videos(name, lengths):
    model = build(name, 8, 3)
    batch = batch_of(lengths, 8, 3)
    losses = late_losses(model, batch)
    assert all(torch.isfinite(v) for v in losses.values())
    model.fit_step(batch, model.make_optimizers(type(model).train_defaults), LATE)
    model.eval()
    for length in sorted(set(lengths)):
        proposals, inference = model.detect(torch.randn(length, 8), {**type(model).test_defaults, **TIME_BASE})
        assert inference.cas.shape == (length, 3) and np.isfinite(inference.cas).all()
        assert all(0 <= p.start < p.end <= length for p in proposals)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim", [1, 3, 100])
def test_any_feature_width(name, dim):
    model = build(name, dim, 4)
    batch = batch_of([6, 10], dim, 4)
    assert all(torch.isfinite(v) for v in late_losses(model, batch).values())
    model.fit_step(batch, model.make_optimizers(type(model).train_defaults), LATE)
    model.eval()
    inference = model.infer(torch.randn(13, dim))
    assert inference.cas.shape == (13, 4) and inference.video_scores.shape == (4,)
    assert 0 <= inference.cas.min() and inference.cas.max() <= 1


@pytest.mark.parametrize("name", NAMES)
def test_hparams_are_recorded_and_a_checkpoint_round_trips(name, tmp_path):
    cls = REGISTRY[name]
    model = build(name, 12, 4)
    expected = {**cls.hparam_defaults(), **split_settings(cls, SMALL.get(name, {}))[0]}
    assert model.hparams() == expected
    assert all(getattr(model, k) == v for k, v in expected.items())  # set as attributes too
    batch = batch_of([9, 14], 12, 4)
    model.fit_step(batch, model.make_optimizers(cls.train_defaults), 0)
    model.on_epoch_end(LATE, lambda: iter([batch]))
    save_checkpoint(tmp_path / "run", model, ["a", "b", "c", "d"], dict(cls.train_defaults), dict(cls.test_defaults), 0.64)
    loaded, payload = load_checkpoint(tmp_path / "run", "cpu")
    assert type(loaded) is cls and payload["hparams"] == model.hparams() == loaded.hparams()
    state, again = model.state_dict(), loaded.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    model.eval()
    x = torch.randn(17, 12)
    a, b = model.infer(x), loaded.infer(x)
    assert np.array_equal(a.cas, b.cas) and np.array_equal(a.video_scores, b.video_scores)
