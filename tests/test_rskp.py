"""RSKP: random walk and EM against hand/dense references, masking, memory bank, losses,
training, synthetic mAP, checkpoints."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from wtal.models import get_localizer, split_settings
from wtal.models.checkpoint import load_checkpoint, save_checkpoint
from wtal.models.rskp import RSKP, random_walk
from wtal.models.train import collate, detect_videos, train_localizer

from helpers import assert_beats_trivial, tiny_batch, tiny_items


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: faster than two on the shared 2-core host (as measured on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batch(lengths, D, C, seed=0):
    """One label per video, plus class 1 on the first video."""
    batch = tiny_batch(lengths, D, C, seed, label_offsets=(0,))
    batch["labels"][0, 1 % C] = 1
    return batch


_tiny_items = partial(tiny_items, dim=48)


def _fill_bank(model, batch):
    model.on_epoch_end(model.warmup, lambda: iter([batch]))
    assert bool(model.bank_filled)


def test_registered_with_paper_defaults():
    assert get_localizer("rskp") is RSKP
    hp, train, test = split_settings(RSKP, {"warmup": "3", "embed_dim": "32", "epochs": "5"})
    assert hp["warmup"] == 3 and hp["embed_dim"] == 32
    assert (hp["num_bases"], hp["em_iters"], hp["em_temperature"], hp["walk_weight"], hp["bank_size"]) == (8, 2, 5.0, 0.5, 5)
    assert (hp["scale"], hp["dropout"], hp["mil_weight"], hp["kd_weight"], hp["kd_temperature"], hp["att_weight"]) == (
        20.0, 0.6, 0.2, 1.0, 0.2, 0.1)
    assert hp["fusion_weight"] == 0.6
    assert RSKP.hparam_defaults()["warmup"] == 100
    assert (train["lr"], train["epochs"]) == (5e-5, 5)
    assert test["class_threshold"] == 0.1 and test["cas_thresholds"] == (0.001, 0.04, 0.002)
    assert (test["oic_outer_ratio"], test["oic_class_weight"], test["nms_threshold"]) == (0.25, 0.0, 0.5)


def test_random_walk_matches_dense_closed_form():
    g = torch.Generator().manual_seed(1)
    T, K, E, w, temp = 7, 3, 5, 0.5, 5.0
    x = torch.randn(1, T, E, generator=g, dtype=torch.float64)
    mu = torch.randn(1, K, E, generator=g, dtype=torch.float64)
    got = random_walk(x, mu, torch.ones(1, T, dtype=torch.bool), w, temp)
    # dense reference: F* = (1 - w) (I - w^2 Z Norm1(Z)^T)^-1 (w Z mu + F)
    xn = x[0] / x[0].norm(dim=1, keepdim=True)
    mn = mu[0] / mu[0].norm(dim=1, keepdim=True)
    z = torch.softmax(temp * xn @ mn.t(), 1)
    n = z / z.sum(0, keepdim=True)
    ref = (1 - w) * torch.linalg.solve(torch.eye(T, dtype=torch.float64) - w ** 2 * z @ n.t(), w * z @ mu[0] + x[0])
    assert torch.allclose(got[0], ref, atol=1e-10)
    assert not torch.allclose(got[0], (1 - w) * x[0])


def test_random_walk_masks_padding_and_invalid_bases():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 6, 4, generator=g, dtype=torch.float64)
    mu = torch.randn(1, 3, 4, generator=g, dtype=torch.float64)
    alone = random_walk(x[:, :4], mu[:, :2], torch.ones(1, 4, dtype=torch.bool), 0.5, 5.0)
    junk_x = torch.cat([x[:, :4], 100 * x[:, 4:]], 1)
    mask = torch.tensor([[True] * 4 + [False] * 2])
    padded = random_walk(junk_x, mu, mask, 0.5, 5.0, base_mask=torch.tensor([[True, True, False]]))
    assert torch.allclose(padded[:, :4], alone, atol=1e-12)
    assert padded[:, 4:].abs().max() == 0


def test_em_one_iteration_hand_worked():
    model = RSKP(2, 1, num_bases=2, em_iters=1, em_temperature=1.0, dropout=0.0)
    with torch.no_grad():
        model.bases.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]]])
    with torch.no_grad():
        mu = model.em(x, torch.ones(1, 3, dtype=torch.bool))
    # cosines to the bases: (1, 0), (0, 1), (s, s) with s = 1/sqrt(2); softmax over the 2 bases
    e = np.e / (np.e + 1)
    z = np.array([[e, 1 - e], [1 - e, e], [0.5, 0.5]])
    ref = (z / z.sum(0)).T @ x[0].numpy()
    assert np.allclose(mu[0].numpy(), ref, atol=1e-6)


def test_forward_shapes_and_losses_masked():
    torch.manual_seed(0)
    B, D, C = 2, 48, 3
    model = RSKP(D, C, warmup=2)
    batch = _batch([9, 14], D, C)
    out = model(batch["features"], batch["mask"])
    assert out["o_frame_logits"].shape == (B, 14, C + 1) and out["m_attention"].shape == (B, 14)
    assert out["o_ca_probs"].shape == (B, C + 1) and out["m_mil_probs"].shape == (B, C + 1)
    assert out["bases"].shape == (B, 8, D) and out["base_scores"].shape == (B, 8, C + 1)
    assert "r_ca_probs" not in out
    assert torch.allclose(out["o_ca_probs"].sum(-1), torch.ones(B))
    assert out["o_attention"][0, 9:].abs().max() == 0
    losses = model.compute_losses(batch, epoch=0)
    for key in ("cls_ca", "cls_mil", "kd", "att"):
        assert losses[key].abs() > 1e-4, key
    assert torch.allclose(losses["cls"], losses["cls_ca"] + 0.2 * losses["cls_mil"])
    assert torch.allclose(losses["total"], losses["cls"] + losses["kd"] + 0.1 * losses["att"])
    assert float(losses["att"].detach()) < 0


def test_kd_and_attention_losses_against_hand_computation():
    torch.manual_seed(0)
    model = RSKP(16, 2, dropout=0.0).eval()
    batch = _batch([17, 11], 16, 2, seed=3)
    with torch.no_grad():
        losses = model.compute_losses(batch, epoch=0)
        out = model(batch["features"], batch["mask"])
    kd, att = [], []
    for b, n in enumerate([17, 11]):
        teacher = torch.softmax(out["m_frame_logits"][b, :n] / 0.2, -1).numpy()
        student = torch.log_softmax(out["o_frame_logits"][b, :n] / 0.2, -1).numpy()
        kd.append(-(teacher * student).sum(-1).mean())
        a = np.sort(out["o_attention"][b, :n].numpy())
        k = max(1, n // 8)
        att.append(a[:k].mean() - a[-k:].mean())
    assert np.isclose(float(losses["kd"]), np.mean(kd), rtol=1e-5)
    assert np.isclose(float(losses["att"]), np.mean(att), rtol=1e-5)


@pytest.mark.parametrize("with_memory", [False, True])
def test_padding_a_video_leaves_its_outputs_unchanged(with_memory):
    torch.manual_seed(0)
    D, C = 24, 3
    model = RSKP(D, C, warmup=1).eval()
    batch = _batch([12, 12], D, C, seed=5)
    if with_memory:
        _fill_bank(model, batch)
    single = {k: v[:1, :12] if k != "labels" else v[:1] for k, v in batch.items()}
    junk = torch.randn(1, 7, D) * 50
    padded = {"features": torch.cat([single["features"], junk], 1),
              "mask": torch.cat([single["mask"], torch.zeros(1, 7, dtype=torch.bool)], 1),
              "labels": single["labels"]}
    mem_a = model.memory_bases(single["labels"]) if with_memory else None
    out_a = model(single["features"], single["mask"], mem_a)
    out_b = model(padded["features"], padded["mask"], mem_a)
    assert with_memory == ("r_attention" in out_a)
    for key, value in out_a.items():
        other = out_b[key][:, :12] if value.dim() >= 2 and value.shape[1] == 12 else out_b[key]
        assert torch.allclose(value, other, atol=1e-5), key
    epoch = 2 if with_memory else 0
    la, lb = model.compute_losses(single, epoch), model.compute_losses(padded, epoch)
    for key in la:
        assert torch.allclose(la[key], lb[key], atol=1e-5), key


def test_memory_bank_keeps_best_representatives_per_class():
    model = RSKP(2, 2, bank_size=2, num_bases=3)
    mu = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]])
    scores = torch.tensor([[[0.2, 0.1, 0.7], [0.5, 0.3, 0.2], [0.1, 0.8, 0.1]]])
    model.update_bank(mu, scores, torch.tensor([[1.0, 1.0]]))
    assert torch.allclose(model.bank_scores, torch.tensor([[0.5, 0.2], [0.8, 0.3]]))
    assert model.bank[0, :, 0].tolist() == [2.0, 1.0] and model.bank[1, :, 0].tolist() == [3.0, 2.0]
    model.update_bank(mu + 10, torch.tensor([[[0.4, 0.0, 0.0], [0.0, 0.0, 0.0], [0.9, 0.0, 0.0]]]), torch.tensor([[1.0, 0.0]]))
    assert model.bank_scores[0].tolist() == pytest.approx([0.9, 0.5]) and model.bank[0, :, 0].tolist() == [13.0, 2.0]
    assert model.bank_scores[1].tolist() == pytest.approx([0.8, 0.3])
    bases, valid = model.memory_bases(torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    assert bases.shape == (2, 4, 2) and valid.tolist() == [[True, True, False, False], [True] * 4]
    assert bases[0, :2, 0].tolist() == [3.0, 2.0]


def test_memory_used_only_after_warmup_and_saved_in_state():
    torch.manual_seed(0)
    D, C = 20, 3
    model = RSKP(D, C, warmup=3, dropout=0.0)
    batch = _batch([10, 15], D, C, seed=7)
    model.on_epoch_end(0, lambda: iter([batch]))
    assert not bool(model.bank_filled) and model.bank.abs().sum() == 0
    before = model.compute_losses(batch, epoch=5)  # warm-up over but bank empty: no memory branch
    assert torch.allclose(before["total"], model.compute_losses(batch, epoch=0)["total"])
    model.on_epoch_end(2, lambda: iter([batch]))  # the official code fills at the end of epoch index warmup
    assert not bool(model.bank_filled)
    model.on_epoch_end(3, lambda: iter([batch]))
    assert bool(model.bank_filled) and (model.bank_scores > 0).sum(1).tolist() == [5, 5, 0]  # classes 0, 1 labelled
    assert torch.allclose(model.compute_losses(batch, epoch=3)["total"], before["total"])
    after = model.compute_losses(batch, epoch=4)
    assert not torch.allclose(after["total"], before["total"])
    assert after["cls_ca"] > before["cls_ca"]  # adds 0.5 x the inter-video branch's CE
    state = model.state_dict()
    assert {"bank", "bank_scores", "bank_filled"} <= set(state)
    opt = model.make_optimizers({"lr": 1e-3, "weight_decay": 0.0})
    old = model.bank.clone()
    model.fit_step(batch, opt, epoch=4)
    assert not torch.equal(model.bank, old)


@pytest.mark.parametrize("key", ["cls_ca", "cls_mil", "kd", "att"])
def test_each_loss_term_is_nonzero_and_decreases_when_optimised(key):
    items, _ = _tiny_items(n=8)
    batch = collate(items, 64, None, torch.device("cpu"))
    torch.manual_seed(0)
    model = RSKP(48, 3, dropout=0.0, warmup=1)
    model.on_epoch_end(1, lambda: iter([batch]))  # memory branch on: its terms are part of cls_ca and cls_mil
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    values = []
    for _ in range(20):
        loss = model.compute_losses(batch, epoch=2)[key]
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(float(loss.detach()))
    assert abs(values[0]) > 1e-3
    assert values[-1] < values[0] - 0.04, values


def test_training_decreases_total_and_repeats():
    items, _ = _tiny_items()
    cfg = {"lr": 2e-3, "weight_decay": 0.0, "batch_size": 4, "epochs": 12, "max_len": 64}
    torch.manual_seed(0)
    model = RSKP(48, 3, warmup=6)
    hist = train_localizer(model, items, cfg, torch.device("cpu"), seed=0)
    assert bool(model.bank_filled)
    assert np.mean([h["total"] for h in hist[-3:]]) < 0.8 * hist[0]["total"]
    assert np.mean([h["cls_ca"] for h in hist[-3:]]) < 0.5 * hist[0]["cls_ca"]
    torch.manual_seed(0)
    again = train_localizer(RSKP(48, 3, warmup=6), items, cfg, torch.device("cpu"), seed=0)
    assert again == hist


@pytest.mark.parametrize("D,embed", [(17, None), (48, 32), (100, None)])
def test_any_feature_width(D, embed):
    torch.manual_seed(0)
    model = RSKP(D, 2, embed_dim=embed, warmup=0)
    batch = _batch([5, 8], D, 2, seed=1)
    model.on_epoch_end(0, lambda: iter([batch]))
    losses = model.compute_losses(batch, epoch=1)
    losses["total"].backward()
    assert torch.isfinite(losses["total"]) and model.bases.grad is not None
    inference = model.infer(batch["features"][1])
    assert inference.cas.shape == (8, 2) and inference.video_scores.shape == (2,)
    assert inference.cas.min() >= 0 and inference.cas.max() <= 1


@pytest.mark.slow
def test_beats_trivial_on_synthetic(tmp_path):
    from wtal.pipeline.synthetic_check import run_synthetic

    # 256-d: the paper's cosine scale 20 is meant for wide features (I3D 2048-d); at 64-d the
    # per-snippet cosine noise (about 1/sqrt(D)) times 20 makes the attention spiky
    out = run_synthetic("rskp", tmp_path, overrides={"lr": 1e-3, "warmup": 5}, epochs=10, dataset={"dim": 256})
    assert bool(out["model"].bank_filled)
    assert_beats_trivial(out, 0.3)


def test_checkpoint_reload_gives_identical_detections(tmp_path):
    items, classes = _tiny_items(n=8, dim=32)
    torch.manual_seed(0)
    model = RSKP(32, 3, warmup=1)
    hp, train_cfg, test_cfg = split_settings(RSKP, {"epochs": "3", "batch_size": "4", "lr": "1e-3"})
    train_localizer(model, items, train_cfg, torch.device("cpu"), seed=0)
    assert bool(model.bank_filled)
    test_cfg["cas_thresholds"] = (0.01, 0.5, 0.05)
    save_checkpoint(tmp_path / "run", model, classes, train_cfg, test_cfg, 0.64)
    loaded, payload = load_checkpoint(tmp_path / "run", "cpu")
    assert isinstance(loaded, RSKP) and loaded.warmup == 1
    assert torch.equal(loaded.bank, model.bank) and bool(loaded.bank_filled)
    a, _ = detect_videos(model, items, test_cfg, classes, 0.64, torch.device("cpu"))
    b, _ = detect_videos(loaded, items, payload["test_config"], classes, 0.64, torch.device("cpu"))
    assert a == b and sum(len(v) for v in a.values()) > 0


def test_kd_weight_halves_once_the_memory_branch_runs():
    torch.manual_seed(0)
    model = RSKP(20, 3, warmup=0, dropout=0.0)
    batch = _batch([10, 15], 20, 3, seed=7)
    warm = model.compute_losses(batch, epoch=0)
    assert torch.allclose(warm["total"], warm["cls"] + 1.0 * warm["kd"] + 0.1 * warm["att"])
    _fill_bank(model, batch)
    mem = model.compute_losses(batch, epoch=1)  # official processor.py: lambda_s = 0.5 after the warm-up
    assert mem["cls_ca"] > warm["cls_ca"]
    assert torch.allclose(mem["total"], mem["cls"] + 0.5 * mem["kd"] + 0.1 * mem["att"])
    paper = RSKP(20, 3, warmup=0, dropout=0.0, kd_weight_memory=1.0)
    paper.load_state_dict(model.state_dict())
    assert torch.allclose(paper.compute_losses(batch, epoch=1)["total"], mem["cls"] + mem["kd"] + 0.1 * mem["att"])


@pytest.mark.parametrize("with_memory", [False, True])
def test_step_gradient_is_the_sum_of_the_videos_gradients(with_memory):
    """The official code backpropagates each video alone and steps every 10: the batch gradient
    is the SUM of the per-video gradients (batch_loss="sum"), the mean's x B; after the warm-up
    each video's representatives enter the bank before the next video (videos 0 and 1 share
    class 1, so video 1 sees video 0's)."""
    torch.manual_seed(0)
    D, C = 20, 3
    batch = _batch([9, 14, 6], D, C, seed=4)
    model = RSKP(D, C, warmup=0, dropout=0.0)
    if with_memory:
        _fill_bank(model, batch)
    epoch = 1 if with_memory else 0
    ref_model = RSKP(D, C, warmup=0, dropout=0.0)
    ref_model.load_state_dict(model.state_dict())
    mean = RSKP(D, C, warmup=0, dropout=0.0, batch_loss="mean")
    mean.load_state_dict(model.state_dict())
    ref = {n: torch.zeros_like(p) for n, p in ref_model.named_parameters()}
    totals = []
    for b, n in enumerate([9, 14, 6]):
        single = {"features": batch["features"][b:b + 1, :n], "mask": batch["mask"][b:b + 1, :n],
                  "labels": batch["labels"][b:b + 1]}
        ref_model.zero_grad()
        total = ref_model.compute_losses(single, epoch)["total"]
        total.backward()
        totals.append(float(total.detach()))
        for name, p in ref_model.named_parameters():
            ref[name] += p.grad
        if with_memory:
            with torch.no_grad():
                out = ref_model(single["features"], single["mask"])
            ref_model.update_bank(out["bases"], out["base_scores"], single["labels"])
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    terms = model.fit_step(batch, opt, epoch)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, ref[name], atol=1e-5, rtol=1e-4), name
    assert torch.equal(model.bank, ref_model.bank) and torch.equal(model.bank_scores, ref_model.bank_scores)
    assert terms["total"] == pytest.approx(sum(totals) / 3, rel=1e-5)
    mean.fit_step(batch, {"main": torch.optim.SGD(mean.parameters(), lr=0.0)}, epoch)
    assert torch.allclose(mean.centres.grad * 3, ref["centres"], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="batch_loss"):
        RSKP(D, C, batch_loss="average")


def test_bank_filled_from_full_length_videos_whatever_max_len():
    import copy

    items, _ = _tiny_items(n=6)
    assert min(len(it.features) for it in items) > 8
    torch.manual_seed(0)
    model = RSKP(48, 3, warmup=0)
    cfg = {"lr": 1e-3, "weight_decay": 5e-4, "batch_size": 3, "epochs": 1, "max_len": 8}
    train_localizer(model, items, cfg, torch.device("cpu"), seed=0)
    assert bool(model.bank_filled)
    ref = copy.deepcopy(model).eval()
    ref.bank.zero_()
    ref.bank_scores.zero_()
    with torch.no_grad():
        for it in items:  # one whole video at a time, as the official ft_eval
            out = ref(torch.from_numpy(it.features).float()[None])
            ref.update_bank(out["bases"], out["base_scores"], torch.from_numpy(it.labels).float()[None])
    assert torch.equal(model.bank_scores, ref.bank_scores) and torch.equal(model.bank, ref.bank)
    assert (model.bank_scores > 0).any()


def test_bases_init_xavier_by_default_orthogonal_as_the_paper():
    torch.manual_seed(0)
    bound = (6 / (8 + 48)) ** 0.5  # xavier-uniform bound of an (8, 48) matrix
    default = RSKP(48, 3).bases.detach()
    assert default.abs().max() <= bound and not torch.allclose(default @ default.t(), torch.eye(8), atol=1e-3)
    ortho = RSKP(48, 3, bases_init="orthogonal").bases.detach()
    assert torch.allclose(ortho @ ortho.t(), torch.eye(8), atol=1e-5)


def test_official_post_processing_defaults_hand_worked():
    """End extended by one snippet (inside the inner mean), the getActLoc outer bands, runs shorter
    than 2 dropped, NMS by the lower-scored segment's length (+1 snippet), no cap."""
    from wtal.postprocess.proposals import cas_detections

    cfg = {**RSKP.test_defaults, "cas_thresholds": (0.1, 0.5, 0.2)}  # thresholds 0.1, 0.3
    assert (cfg["end_extension"], cfg["min_run_length"], cfg["nms_overlap"], cfg["max_detections"], cfg["oic_bands"]) == (
        1, 2, "over_lower", None, "wtalc")
    cas = np.array([0, .2, .8, .8, .8, .8, .8, .8, .2, 0, .5, 0, .6, .6, 0, 0], dtype=np.float64)[:, None]
    got = [(p.start, p.end, round(p.score, 6)) for p in cas_detections(cas, np.array([0.9]), cfg)]
    # thr 0.1: run [1, 9), L 8 -> [1, 10): inner 5.2 / 9; outer [int(1 - 2) -> 0, 1) and [10, int(10 + 2)) = 0.5 / 3
    #          [10, 11): one snippet, dropped; [12, 14), L 2 -> [12, 15): inner 1.2 / 3; outer [11, 12) and
    #          [15, min(T - 1 = 15, 15)) (empty) = 0 -> 0.4
    # thr 0.3: run [2, 8), L 6 -> [2, 9): inner 5 / 7; outer [int(0.5) = 0, 2) and [9, int(10.5) = 10) = 0.2 / 3
    # NMS: [2, 9) keeps; [1, 10) overlaps (7 + 1) / (9 + 1) = 0.8 > 0.5 of its own length: suppressed;
    # [12, 15) 0.4 twice: the second overlaps 4 / 4: suppressed
    assert got == [(2.0, 9.0, round(5 / 7 - 0.2 / 3, 6)), (12.0, 15.0, 0.4)]


def test_wtalc_oic_bands_hand_worked():
    from wtal.postprocess.proposals import oic_score_wtalc

    signal = np.arange(10) / 10
    # run [3, 5) (L 2) extended to [3, 6): inner mean(.3, .4, .5); before [int(2.5), 3) = {2}; after [6, int(6.5)) empty
    assert oic_score_wtalc(signal, 3, 6, 2, 0.25) == pytest.approx(0.4 - 0.2)
    # L 8 at [1, 9) -> [1, 10): before {0}; after [10, min(9, 12)) empty (the last snippet is never outer)
    assert oic_score_wtalc(signal, 1, 10, 8, 0.25) == pytest.approx(np.mean(signal[1:10]) - 0.0)
    # L 4 at [3, 7) -> [3, 8): before [2, 3); after [8, min(9, 9)) = {8}
    assert oic_score_wtalc(signal, 3, 8, 4, 0.25) == pytest.approx(0.5 - (0.2 + 0.8) / 2)
