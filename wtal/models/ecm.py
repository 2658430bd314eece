"""ECM: Equivalent Classification Mapping for weakly supervised temporal action localization
(IEEE TPAMI 2022, arXiv 2008.07728; public code VividLe/Equivalent-Classification-Mapping).

Two localisation-by-classification pipelines share one snippet encoder E (two temporal convs,
kernel 3, LeakyReLU 0.01, dropout 0.5 on the output) and one 1x1 classifier W (no background
class, no bias):

- pre-classification stream: CAS A = W E(x) of shape (T, C); the video logits s_pre are the
  mean of the k = max(1, T // 8) highest CAS values per class;
- weight transition (Sec. 3.2): per-class aggregation weights W^a = sigmoid(1x1 conv(A)) in
  (0, 1)^(T, C), background weights W^b = 1 - W^a;
- post-classification stream: snippets are split into G = 3 interleaved folds (t mod 3); for
  every class c and fold g the input features are aggregated into one feature
  f^a_{c,g} = sum_t W^a_{t,c} x_t over the fold's valid snippets (Eq. 1, a weighted sum, at the
  scale of a 750-snippet video: times 750 / T for a video of T valid snippets), the three
  folds of a class pass through E as a length-3 sequence, and class c's own classifier row
  scores them: s_post[c] = mean_g W_c E(f^a_c)_g. Background features f^b use W^b the same way
  (Eq. 2).

Losses (Eq. 5, alpha = 0.05 and beta = 5 from the public code, THUMOS14):
    L = CE(s_pre) + CE(s_post) + 0.05 * L_c2c + 5 * L_a2c,
where CE is the softmax cross-entropy against L1-normalised video labels (Sec. 3.5), L_c2c =
MSE(s_pre, s_post) on the logits (Eq. 3, classification-to-classification consistency), and
L_a2c (Eq. 4, aggregation consistency) takes p = softmax([s_post, s_bg]) over the 2C action and background
logits and, for every ground-truth class c, applies binary cross-entropy pushing p[c] to 1
and p[C + c] to 0: the transition weights must pick the snippets that carry class c and leave
none of them to the background aggregate.

The a2c background aggregate (reviews/ecm.md A2, fixed), `a2c_background`: "official" (default,
what the public code computes, lib/models/network.py:82-110): a ground-truth class g aggregates
with weights W^a_g (1 - W^a_g), any other class c takes the mean over the video's ground-truth
classes g of its logit aggregated with W^a_c (1 - W^a_g); "paper": Eq. 2 with W^b = 1 - W^a of
each class itself. `aggregate="mean"` (sum_t w x / sum_t w) is kept as an option (A1, fixed: the
sum is the default). Folds with no valid snippet (T < 3) are left out of the fold mean.

Test: softmax(s_pre) rejects classes below 0.25; the CAS, clipped at zero and min-max
normalised per class, is thresholded at 0.01:0.2 step 0.025; proposals score OIC with outer
ratio 0.4 plus 0.15 x class score; per-class NMS 0.6.

Protocol defaults as the official code that produced the THUMOS14 table (reviews/ecm.md A4-A8,
fixed): every video linearly interpolated to T = 750 in training and test (paper §4.1), OIC on
the thresholded CAS, the CAS upsampled to frames before thresholding, NMS with "+1 second"
overlap (suppress at >= 0.6), no detection cap. A9 (the official code keeps the best of its
test-set evaluations) is the one deliberate difference: wtal keeps the last epoch.

ECM starts slowly: the THUMOS14 training log the authors publish with their code
(logs/THUMOS14, 200 videos, 13 steps of 16 per epoch) has mAP 0 up to epoch 23 (about 300
steps: no class reaches the 0.25 threshold), mAP@0.5 2.2 % at epoch 40, 16.4 % at 50 and 28.2 %
at 150. A shortened schedule therefore makes no detection at all.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SettingsError
from ..postprocess.proposals import POSTPROCESS_DEFAULTS, minmax_normalise
from .base import Inference, Localizer, TemporalConvHead, register, topk_count, topk_mean, video_label_loss

NEGATIVE_SLOPE = 0.01  # nn.LeakyReLU's default, as in the public code


AGGREGATES = ("sum", "mean")
A2C_BACKGROUNDS = ("official", "paper")


def fold_aggregate(features: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor,
                   folds: int, mode: str = "sum", nominal_len: int = 750) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class weighted aggregates of features over `folds` interleaved temporal folds.

    features (B, T, D), weights (B, T, C), mask (B, T) bool. Snippet t belongs to fold t % folds.
    "sum" (Eq. 1-2): sum_t w_t x_t over the fold, times nominal_len / (valid snippets of the
    video), so a video of `nominal_len` snippets gets exactly the paper's sum and any other length
    the scale it would have at that length; "mean": the sum divided by sum_t w_t.
    Returns aggregated features (B, C, folds, D) and a (B, folds) bool mask of folds that hold
    at least one valid snippet (empty folds are zero vectors).
    """
    if mode not in AGGREGATES:
        raise ValueError(f"aggregate={mode!r}: choose one of {', '.join(AGGREGATES)}")
    B, T, _ = features.shape
    fold_of = torch.arange(T, device=features.device) % folds
    member = F.one_hot(fold_of, folds).to(features.dtype).unsqueeze(0) * mask.unsqueeze(-1).to(features.dtype)  # (B, T, G)
    w = weights.unsqueeze(-1) * member.unsqueeze(2)  # (B, T, C, G)
    num = torch.einsum("btcg,btd->bcgd", w, features)
    valid = member.sum(1) > 0  # (B, G)
    if mode == "sum":
        length = mask.sum(1).clamp(min=1).to(features.dtype)  # (B,)
        agg = num * (nominal_len / length)[:, None, None, None]
    else:
        agg = num / w.sum(1).unsqueeze(-1).clamp(min=1e-6)
    return agg * valid[:, None, :, None].to(agg.dtype), valid


@register
class ECM(Localizer):
    """Pre- and post-classification streams sharing an encoder and a classifier."""

    name = "ecm"
    paper = "Equivalent Classification Mapping (Zhao et al., TPAMI 2022)"
    setting_help = {"folds": "interleaved temporal folds of the post-classification aggregation",
                    "c2c_weight": "weight of L_c2c (MSE of the pre and post video scores)",
                    "a2c_weight": "weight of L_a2c"}
    train_defaults = {"lr": 2e-4, "weight_decay": 5e-4, "batch_size": 16, "epochs": 150, "max_len": 750,
                      "train_sampling": "interpolate", "lr_decay_epochs": (), "lr_decay_factor": 0.1}
    test_defaults = {
        "class_threshold": 0.25,
        "cas_thresholds": (0.01, 0.2, 0.025),
        "oic_outer_ratio": 0.4,
        "oic_class_weight": 0.15,
        "nms_threshold": 0.6,
        "test_sampling": "interpolate",
        "test_len": 750,
        **POSTPROCESS_DEFAULTS,
        "oic_signal": "thresholded",
        "cas_upsample": "frames",
        "nms_overlap": "tiou_plus_one",
    }

    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 2048, dropout: float = 0.5,
                 topk_fraction: float = 0.125,
                 folds: int = 3, c2c_weight: float = 0.05, a2c_weight: float = 5.0, aggregate: str = "sum",
                 aggregate_len: int = 750, a2c_background: str = "official"):
        super().__init__(feature_dim, num_classes)
        if aggregate not in AGGREGATES:
            raise SettingsError(f"aggregate={aggregate!r}: choose one of {', '.join(AGGREGATES)}")
        if a2c_background not in A2C_BACKGROUNDS:
            raise SettingsError(f"a2c_background={a2c_background!r}: choose one of {', '.join(A2C_BACKGROUNDS)}")
        self.conv1 = TemporalConvHead(feature_dim, hidden, layers=1, dropout=0.0, negative_slope=NEGATIVE_SLOPE)
        self.conv2 = TemporalConvHead(hidden, hidden, layers=1, dropout=0.0, negative_slope=NEGATIVE_SLOPE)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes, bias=False)
        self.transition = nn.Conv1d(num_classes, num_classes, 1)

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Shared encoder E on (N, L, D) with padded positions zeroed between the layers, so a
        padded sequence gives exactly the unpadded result."""
        m = mask.unsqueeze(-1).to(x.dtype)
        h = self.conv1(x * m) * m
        return self.drop(self.conv2(h) * m)

    def post_classify(self, agg: torch.Tensor, fold_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of aggregated features (B, C, G, D): class c's folds through E, scored by
        classifier row c, averaged over non-empty folds."""
        B, C, G, D = agg.shape
        fm = fold_mask.unsqueeze(1).expand(B, C, G)
        h = self.encode(agg.reshape(B * C, G, D), fm.reshape(B * C, G)).reshape(B, C, G, -1)
        scores = torch.einsum("bcgh,ch->bcg", h, self.classifier.weight)
        m = fm.to(scores.dtype)
        return (scores * m).sum(-1) / m.sum(-1).clamp(min=1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Named outputs: cas (B, T, C) logits, video_logits (pre stream), weights W^a (B, T, C),
        post_logits and the paper's background_logits (B, C) of W^b = 1 - W^a (Eq. 2)."""
        return self.streams(features, mask, paper_background=True)

    def streams(self, features: torch.Tensor, mask: torch.Tensor | None,
                paper_background: bool) -> dict[str, torch.Tensor]:
        """The forward's outputs; the paper's background stream only when asked for, since the
        official a2c background (the default) and inference do not use it."""
        B, T, _ = features.shape
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=features.device)
        x = features * mask.unsqueeze(-1).to(features.dtype)
        cas = self.classifier(self.encode(x, mask))
        k = topk_count(mask, T, self.topk_fraction, B, features.device)
        video_logits = topk_mean(cas, k, mask)
        weights = torch.sigmoid(self.transition(cas.transpose(1, 2))).transpose(1, 2)
        out = {"cas": cas, "video_logits": video_logits, "weights": weights}
        agg_a, fold_mask = fold_aggregate(x, weights, mask, self.folds, self.aggregate, self.aggregate_len)
        if not paper_background:
            return {**out, "post_logits": self.post_classify(agg_a, fold_mask)}
        agg_b, _ = fold_aggregate(x, 1.0 - weights, mask, self.folds, self.aggregate, self.aggregate_len)
        both = self.post_classify(torch.cat([agg_a, agg_b]), torch.cat([fold_mask, fold_mask]))
        return {**out, "post_logits": both[:B], "background_logits": both[B:]}

    def official_background_logits(self, features: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor,
                                   labels: torch.Tensor) -> torch.Tensor:
        """Background logits (B, C) as the public code computes them (reviews/ecm.md A2): for each
        ground-truth class g the features are weighted by W^a_c (1 - W^a_g); a ground-truth class
        takes its own entry (weights w_g (1 - w_g)), any other class c the mean over the video's
        ground-truth classes g of its entry. Videos without a label get zeros (no a2c term).
        Only the (video, ground-truth class) pairs are aggregated, as there."""
        x = features * mask.unsqueeze(-1).to(features.dtype)
        present = labels > 0
        pair_b, pair_g = torch.nonzero(present, as_tuple=True)
        zeros = x.new_zeros(labels.shape)
        if pair_b.numel() == 0:
            return zeros
        pair_weights = weights[pair_b] * (1.0 - weights[pair_b, :, pair_g]).unsqueeze(-1)  # (P, T, C)
        agg, fold_mask = fold_aggregate(x[pair_b], pair_weights, mask[pair_b], self.folds, self.aggregate,
                                        self.aggregate_len)
        logits = self.post_classify(agg, fold_mask)  # (P, C)
        n = present.sum(-1, keepdim=True).clamp(min=1).to(x.dtype)
        mean = zeros.index_add(0, pair_b, logits) / n
        own = zeros.index_put((pair_b, pair_g), logits[torch.arange(len(pair_b), device=x.device), pair_g])
        return torch.where(present, own, mean)

    @staticmethod
    def c2c_loss(pre_logits: torch.Tensor, post_logits: torch.Tensor) -> torch.Tensor:
        """Classification consistency: MSE between the two streams' video logits."""
        return F.mse_loss(pre_logits, post_logits)

    @staticmethod
    def a2c_loss(post_logits: torch.Tensor, background_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Aggregation consistency: softmax over [action, background] logits (2C), then binary
        cross-entropy with target 1 for each ground-truth class's action entry and 0 for its
        background entry; mean per video over its 2 x (number of classes) entries, then over
        the videos that have a label."""
        p = torch.softmax(torch.cat([post_logits, background_logits], -1), -1)
        C = post_logits.shape[-1]
        present = (labels > 0).to(p.dtype)
        eps = 1e-8
        bce = -(torch.log(p[:, :C].clamp(min=eps)) + torch.log((1 - p[:, C:]).clamp(min=eps))) * present
        n = present.sum(-1)
        has = n > 0
        if not bool(has.any()):
            return p.sum() * 0.0
        return (bce.sum(-1)[has] / (2 * n[has])).mean()

    def compute_losses(self, batch, epoch):
        paper = self.a2c_background == "paper"
        out = self.streams(batch["features"], batch["mask"], paper_background=paper)
        labels = batch["labels"]
        pre = video_label_loss(out["video_logits"], labels)
        post = video_label_loss(out["post_logits"], labels)
        c2c = self.c2c_loss(out["video_logits"], out["post_logits"])
        background = (out["background_logits"] if paper else
                      self.official_background_logits(batch["features"], out["weights"], batch["mask"], labels))
        a2c = self.a2c_loss(out["post_logits"], background, labels)
        total = pre + post + self.c2c_weight * c2c + self.a2c_weight * a2c
        return {"total": total, "pre": pre, "post": post, "c2c": c2c, "a2c": a2c}

    @torch.no_grad()
    def infer(self, features):
        """Video scores = softmax of the pre-stream logits; CAS clipped at 0 and min-max
        normalised per class (as the public code's ReLU'd min-max), in [0, 1]."""
        self.eval()
        out = self.streams(features.unsqueeze(0), None, paper_background=False)
        scores = torch.softmax(out["video_logits"][0], -1).float().cpu().numpy()
        raw = out["cas"][0].float().cpu().numpy()
        cas = minmax_normalise(np.maximum(raw, 0.0), axis=0)
        extras = {
            "cas_logits": raw,
            "weights": out["weights"][0].float().cpu().numpy(),
            "post_scores": torch.softmax(out["post_logits"][0], -1).float().cpu().numpy(),
        }
        return Inference(cas=cas.astype(np.float32), video_scores=scores, extras=extras)
