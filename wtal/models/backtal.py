"""BaS-Net and BackTAL: background suppression, and its background-click extension.

BaS-Net (Lee et al., "Background Suppression Network for Weakly-supervised Temporal Action
Localization", AAAI 2020). A filter module (1x1 conv D->512, LeakyReLU, 1x1 conv 512->1,
sigmoid) gives a foreground attention w_t. One CAS module (two temporal convs k=3 with
LeakyReLU, dropout 0.7, 1x1 classifier without bias over C+1 classes, the last one background)
is applied twice: to the features (base branch) and to w_t * features (suppressed branch). Video
logits are the mean of the k = T//8 highest CAS values per class. The base branch is trained to
contain background (label C+1 = 1), the suppressed branch not to (label C+1 = 0):

    L = L_base + L_supp + 1e-4 * sum_t w_t

with L_* the BCE between softmax video scores and L1-normalised labels (the public code).
Inference uses the suppressed branch: softmax video scores, and its CAS min-max normalised
over time with the min and max clipped at zero (the public `minmax_norm`).

BackTAL (Yang et al., "Background-Click Supervision for Temporal Action Localization", TPAMI
2021; equations as numbered in the paper) keeps that network, without conv biases, with video
scores by top-k (Eq. 1) and softmax cross-entropy (Eq. 2), and adds, for snippets holding a
background click (`batch["background"]`):

- L_click (L_frame, Eq. 3): frame-level cross-entropy of the base CAS (C+1 classes) against
  background, averaged over the clicked snippets of the batch (weight 1);
- L_sep (score separation, Eq. 5-8, weight 1): for each ground-truth class c of a video, softmax
  over (top-k mean action score p_act, mean base-CAS value of c at the clicked snippets p_bg) and
  the negative log-probability of the action score, averaged over classes and videos;
- an affinity module: an embedding (conv k3 D->512, LeakyReLU, conv k3 512->32, L2-normalised)
  gives the cosine similarity (Eq. 9) a[j, t] = sim(t, t+j-h//2) of each snippet with its h local
  neighbours (`neighbourhood`, default 3; the paper keeps h = the temporal kernel size, so both
  temporal convs of the CAS module have kernel h); both convs are affinity-modulated (Eq. 14-16,
  `affinity_conv1d`), and L_aff (Eq. 10-13, weight 0.8) is the sum of four hinge losses on the
  clicked-background embeddings B and the embeddings F at the top-k suppressed-CAS snippets of
  each ground-truth class: min sim within F and within B >= tau_same = 0.5, max sim between F and
  B (both ways) <= tau_diff = 0.1 (per anchor and averaged, as the official loss.py:52-79).

    L = L_base + L_supp + 1e-4 * L_norm + L_click + 1.0 * L_sep + 0.8 * L_aff     (Eq. 4)

with L_base, L_supp the softmax cross-entropy of BackTAL's public code. A video without clicks
contributes nothing to the click terms. Padded snippets are masked out of every convolution
(hidden activations and embeddings are zeroed there), pooling and loss, so a padded video
predicts exactly what it predicts alone.

Affinity layout (`affinity_layout`): "official" (default) is what VividLe/BackTAL
lib/models/network.py:40-58 computes: its similarity tile is k blocks of D rows while the
unfolded input is channel-major (c k + i), so W[:, c, i] x_c is scaled by a[(c k + i) // D, t]:
at k = 3, about the first D/3 input channels (all taps) by sim(t, t-1), the middle third
unmodulated, the last by sim(t, t+1), the boundary channels split by tap (the official code has
k = 3 only; k blocks of D rows is its tile for any h); "paper" is Eq. 15-16, tap i scaled by
a[i, t]. Ablations of the paper: `affinity_modulation=false` drops the affinity module (no
embedding, no L_aff, plain convolutions of Eq. 14: Table 7 without "Affinity Module"); `affinity_weight=0` keeps the modulation
without L_aff (the paper's 35.1 variant); `neighbourhood` 3/5/7/9 is Table 9.

Test (§3.5 plus the official THUMOS14 test): the suppressed CAS thresholded as BaS-Net; with
`magnitude_thresholds` (default 0.3, 0.8, 0.075, as VividLe/BackTAL
lib/post_process/functions.py:154-159,188-198) the L2 norm over channels of the suppressed
branch's first conv layer (after its LeakyReLU), min-max normalised and clipped to [0, 1]
(extras["magnitude"]), is upsampled as the CAS, and its runs >= each threshold become proposals
of every class that passes the class threshold, scored by OIC on that class's unthresholded CAS
plus 0.2 x the class score (the real score: BackTAL's code uses it before binarising), pooled
with the CAS proposals before the per-class NMS. The code adds them on THUMOS14 only, so the
ActivityNet 1.2 preset sets None; there is no official ActivityNet 1.3 configuration, so that
preset keeps the THUMOS14 value (`--set magnitude_thresholds=` turns them off).

Review items (reviews/backtal.md) marked high or medium, and how wtal stands:
- 1 / 3.1 fixed temporal scale (high): fixed, every video linearly interpolated to T = 750 in
  training and at test (`train_sampling`, `test_sampling` interpolate). Paper §4.1 replaces
  BaS-Net's random sampling by this ("the one simplification", 27.0 -> 28.6 mAP@0.5) and the
  official code trains on fixed-T features (experiments/THUMOS14.yaml:28 NUM_SEGMENTS 750), so
  BaS-Net keeps its perturbed sampler and BackTAL does not (`--set train_sampling=perturb`).
- 2 / 5.2 feature-magnitude proposals (medium): fixed, `magnitude_thresholds` (above).
- 3 / 5.4 OIC on the thresholded CAS (medium): fixed, `oic_signal=thresholded`.
- 4 / 5.3 CAS resolution (medium-low): fixed, `cas_upsample` frames (BackTAL) and 24 (BaS-Net).
- 5 / 4.1 affinity layout (low-medium): fixed, `affinity_layout=official` default, paper option.
- 6 / 5.1 schedule and checkpoint (medium): deliberate, the last epoch of the paper's 100 is kept;
  the official code runs 40 epochs and keeps the best test-set evaluation.
- 7 / 5.5 NMS overlap (low-medium): fixed, `nms_overlap=tiou_plus_one` (+1 in seconds, suppress >=).
- 13 / §6 BaS-Net test (low-medium): fixed, binarised class-score term (`class_score=constant`,
  +0.2 per proposal, Pilhyeon/BaSNet-pytorch test.py:39-40), 750 test slots, x24. Two deliberate
  differences: test videos are interpolated to 750 where the public code samples floor-uniform
  (`--set test_sampling=perturb` gives that), and the last of the 1500 iterations is kept where
  the public code evaluates on the test set after every iteration and keeps the best.
- 14 / 3.3 time scale of length-normalised features (bug risk): fixed, each video's own time base
  (`FeatureSource.time_base`) for clicks and seconds, and test positions mapped back per video.
- 8 / 4.2 (low) L_sep is -log p_act, as the official lib/criterion/loss.py:137-139: Eq. 8's
  -log p_act - log(1 - p_bg) equals -2 log p_act, so separation_weight 1 is the paper's
  lambda = 0.5 in Eq. 8's form. 9 / 5.6: no detection cap.
"""
from __future__ import annotations

import operator
from functools import reduce
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SettingsError
from ..postprocess.proposals import POSTPROCESS_DEFAULTS, cas_detections, minmax_normalise, threshold_range
from .base import Inference, Localizer, LocalizerError, register, topk_count, topk_mean, video_label_loss

AFFINITY_LAYOUTS = ("official", "paper")


def affinity_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, affinity: torch.Tensor,
                    layout: str = "official") -> torch.Tensor:
    """Temporal convolution modulated by the local affinity (B, k, T), row j = sim(t, t+j-h).

    x (B, D, T), weight (O, D, k); zero padding of h = k // 2 each side. With an all-ones affinity
    both layouts are `F.conv1d(x, weight, bias, padding=h)`.

    - "paper" (Eq. 15-16): tap i of every channel is scaled by a[i, t]:
      y_t = sum_i a[i, t] W_i x_{t+i-h}.
    - "official" (VividLe/BackTAL AttentionConv1d): the unfolded input is indexed channel-major,
      c k + i, but the similarity tile is laid out in k blocks of D rows, block j = sim(t, t+j-h);
      so W[:, c, i] x_c is scaled by a[(c k + i) // D, t]: about the first D/k channels (all their
      taps) by the left neighbour's similarity, the middle ones by sim(t, t) = 1, the last by the
      right one's (k blocks of D rows is the official k = 3 tile written for any k).
    """
    out_dim, in_dim, k = weight.shape
    h = k // 2
    if layout == "paper":
        T = x.shape[-1]
        taps = F.conv1d(x, weight.permute(2, 0, 1).reshape(k * out_dim, in_dim, 1))
        taps = F.pad(taps.view(x.shape[0], k, out_dim, T), (h, h))
        y = reduce(operator.add, (affinity[:, j: j + 1] * taps[:, j, :, j: j + T] for j in range(k)))
    elif layout == "official":
        block = torch.arange(in_dim * k, device=weight.device).view(in_dim, k) // in_dim
        parts = []
        for j in range(k):
            select = block == j
            rows = torch.nonzero(select.any(1)).flatten()  # a contiguous channel range
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            w = weight[:, lo:hi] * select[lo:hi].to(weight.dtype)
            parts.append(affinity[:, j: j + 1] * F.conv1d(x[:, lo:hi], w, padding=h))
        y = reduce(operator.add, parts)
    else:
        raise SettingsError(f"affinity_layout={layout!r}: choose one of {', '.join(AFFINITY_LAYOUTS)}")
    return y if bias is None else y + bias.view(1, -1, 1)


def local_affinity(embedding: torch.Tensor, kernel: int) -> torch.Tensor:
    """Cosine similarity (B, kernel, T) of each snippet with its neighbours t-h..t+h.

    `embedding` (B, E, T) is L2-normalised and zero at padded snippets, so neighbours outside
    the video get similarity 0.
    """
    h = kernel // 2
    T = embedding.shape[-1]
    padded = F.pad(embedding, (h, h))
    return torch.stack([(embedding * padded[:, :, j: j + T]).sum(1) for j in range(kernel)], dim=1)


def relu_minmax(cas: np.ndarray) -> np.ndarray:
    """Per-class min-max over time of the CAS clipped at zero (BaS-Net's `minmax_norm`):
    snippets with negative activation stay below every threshold."""
    return minmax_normalise(np.maximum(cas, 0.0), axis=0)


def feature_magnitude(norm: np.ndarray) -> np.ndarray:
    """Min-max over time (min and max clipped at zero) of a per-snippet feature norm, clipped to
    [0, 1] (the official THUMOS14 test's `minmax_norm_feature`)."""
    return np.clip(relu_minmax(np.asarray(norm, dtype=np.float64)[:, None])[:, 0], 0.0, 1.0)


class CASModule(nn.Module):
    """Two temporal convs (kernel k, 3 by default) with LeakyReLU, dropout and a bias-free 1x1
    classifier.

    Works channels-first: x (B, D, T), m (B, 1, T) float mask; returns the logits (B, C+1, T)
    and the first hidden layer (B, hidden, T), both zero at padded snippets. Given an affinity
    (B, k, T), the two temporal convs are affinity-modulated (BackTAL) in `layout`.
    """

    def __init__(self, in_dim: int, hidden: int, num_outputs: int, dropout: float, bias: bool, kernel: int = 3,
                 layout: str = "official"):
        super().__init__()
        self.conv1 = nn.Conv1d(in_dim, hidden, kernel, padding=kernel // 2, bias=bias)
        self.conv2 = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, bias=bias)
        self.act = nn.LeakyReLU()
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Conv1d(hidden, num_outputs, 1, bias=False)
        self.layout = layout

    def _conv(self, conv: nn.Conv1d, x: torch.Tensor, affinity: torch.Tensor | None) -> torch.Tensor:
        return conv(x) if affinity is None else affinity_conv1d(x, conv.weight, conv.bias, affinity, self.layout)

    def forward(self, x: torch.Tensor, m: torch.Tensor, affinity: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.act(self._conv(self.conv1, x, affinity)) * m
        h = self.act(self._conv(self.conv2, first, affinity)) * m
        return self.classifier(self.drop(h)), first


@register
class BaSNet(Localizer):
    """Background suppression network: filter attention, base and suppressed CAS branches."""

    name = "basnet"
    paper = "BaS-Net: background suppression network (Lee et al., AAAI 2020)"
    setting_help = {"filter_hidden": "hidden width of the filter module", "norm_weight": "weight of the attention L1 norm"}
    conv_bias = True
    # the public code: 1500 iterations of batch 16 on THUMOS14's 200 validation videos
    train_defaults = {"lr": 1e-4, "weight_decay": 5e-4, "batch_size": 16, "epochs": 115, "max_len": 750,
                      "train_sampling": "perturb", "lr_decay_epochs": (), "lr_decay_factor": 0.1}
    test_defaults = {
        "class_threshold": 0.25,
        "cas_thresholds": (0.0, 0.25, 0.025),
        "oic_outer_ratio": 0.25,
        "oic_class_weight": 0.2,
        "nms_threshold": 0.7,
        "test_sampling": "interpolate",
        "test_len": 750,
        **POSTPROCESS_DEFAULTS,
        "oic_signal": "thresholded",
        "cas_upsample": "24",
        "class_score": "constant",
        "nms_overlap": "tiou_plus_one",
    }

    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 2048, filter_hidden: int = 512,
                 dropout: float = 0.7, topk_fraction: float = 0.125, norm_weight: float = 1e-4):
        super().__init__(feature_dim, num_classes)
        self.filter_module = nn.Sequential(
            nn.Conv1d(feature_dim, filter_hidden, 1), nn.LeakyReLU(), nn.Conv1d(filter_hidden, 1, 1), nn.Sigmoid()
        )
        self.cas_module = self.make_cas_module(feature_dim, hidden, num_classes + 1, dropout)

    def make_cas_module(self, in_dim: int, hidden: int, num_outputs: int, dropout: float) -> CASModule:
        """BaS-Net's CAS module: kernel 3, plain convolutions."""
        return CASModule(in_dim, hidden, num_outputs, dropout, bias=self.conv_bias)

    def context(self, x: torch.Tensor, m: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Extra outputs and the CAS-module affinity; BaS-Net has none."""
        return {}, None

    def first_layer_outputs(self, first_supp: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra outputs from the suppressed branch's first hidden layer (B, hidden, T); none here."""
        return {}

    def forward(self, features, mask=None):
        """Named outputs: attention (B, T), cas_base / cas_supp (B, T, C+1) logits,
        video_logits_base / video_logits_supp (B, C+1) top-k means."""
        B, T, _ = features.shape
        x = features.transpose(1, 2)
        m = (torch.ones(B, 1, T, device=x.device, dtype=x.dtype) if mask is None
             else mask.unsqueeze(1).to(x.dtype))
        x = x * m
        attention = self.filter_module(x) * m
        out, affinity = self.context(x, m)
        cas_base = self.cas_module(x, m, affinity)[0].transpose(1, 2)
        cas_supp, first_supp = self.cas_module(x * attention, m, affinity)
        cas_supp = cas_supp.transpose(1, 2)
        k = topk_count(mask, T, self.topk_fraction, B, features.device)
        out.update({
            "attention": attention[:, 0],
            "cas_base": cas_base,
            "cas_supp": cas_supp,
            "video_logits_base": topk_mean(cas_base, k, mask),
            "video_logits_supp": topk_mean(cas_supp, k, mask),
            **self.first_layer_outputs(first_supp),
        })
        return out

    def video_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BaS-Net: BCE between softmax video scores and L1-normalised labels."""
        target = target / target.sum(-1, keepdim=True).clamp(min=1e-8)
        return F.binary_cross_entropy(torch.softmax(logits, -1), target)

    def suppression_losses(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """base (background present), supp (background suppressed) and norm (sum of attention)."""
        labels = batch["labels"]
        ones, zeros = labels.new_ones(len(labels), 1), labels.new_zeros(len(labels), 1)
        return {
            "base": self.video_loss(out["video_logits_base"], torch.cat([labels, ones], 1)),
            "supp": self.video_loss(out["video_logits_supp"], torch.cat([labels, zeros], 1)),
            "norm": out["attention"].sum(1).mean(),
        }

    def compute_losses(self, batch, epoch):
        out = self(batch["features"], batch["mask"])
        losses = self.suppression_losses(out, batch)
        losses["total"] = losses["base"] + losses["supp"] + self.norm_weight * losses["norm"]
        return losses

    @torch.no_grad()
    def infer(self, features):
        return self._infer(features)[0]

    def _infer(self, features: torch.Tensor) -> tuple[Inference, dict[str, torch.Tensor]]:
        """The inference of one video (T, D) and the network outputs it comes from."""
        self.eval()
        out = self(features.unsqueeze(0))
        C = self.num_classes
        scores = torch.softmax(out["video_logits_supp"][0], -1)[:C].float().cpu().numpy()
        cas = relu_minmax(out["cas_supp"][0, :, :C].float().cpu().numpy())
        extras = {"attention": out["attention"][0].float().cpu().numpy(),
                  "background": torch.softmax(out["cas_supp"][0], -1)[:, C].float().cpu().numpy()}
        return Inference(cas=cas.astype(np.float32), video_scores=scores, extras=extras), out


@register
class BackTAL(BaSNet):
    """BaS-Net with background-click losses and an affinity-modulated CAS module."""

    name = "backtal"
    paper = "Background-click supervision, BackTAL (Yang et al., TPAMI 2021)"
    setting_help = {"embed_hidden": "hidden width of the affinity embedding", "embed_dim": "affinity embedding width",
                    "click_weight": "weight of the frame-level click CE", "separation_weight": "weight of score separation",
                    "affinity_weight": "weight of the affinity hinge losses", "tau_same": "hinge margin, same kind",
                    "tau_diff": "hinge margin, action vs background",
                    "affinity_layout": "official (channel blocks, as the code) or paper (Eq. 15-16, per tap)",
                    "affinity_modulation": "false: no affinity module, plain convolutions (Table 7 ablation)",
                    "neighbourhood": "odd neighbourhood size h = temporal kernel of the CAS module (Table 9)",
                    "magnitude_thresholds": "start,stop,step of the feature-magnitude proposals (empty: none)"}
    needs_clicks = True
    conv_bias = False
    train_defaults = {"lr": 1e-4, "weight_decay": 5e-4, "batch_size": 16, "epochs": 100, "max_len": 750,
                      "train_sampling": "interpolate", "lr_decay_epochs": (), "lr_decay_factor": 0.1}
    test_defaults = {**BaSNet.test_defaults, "nms_threshold": 0.55, "cas_upsample": "frames", "class_score": "weighted",
                     "magnitude_thresholds": (0.3, 0.8, 0.075)}

    def __init__(self, feature_dim: int, num_classes: int, embed_hidden: int = 512, embed_dim: int = 32,
                 click_weight: float = 1.0, separation_weight: float = 1.0, affinity_weight: float = 0.8,
                 tau_same: float = 0.5, tau_diff: float = 0.1, affinity_layout: str = "official",
                 affinity_modulation: bool = True, neighbourhood: int = 3, **basnet: Any):
        if affinity_layout not in AFFINITY_LAYOUTS:
            raise SettingsError(f"affinity_layout={affinity_layout!r}: choose one of {', '.join(AFFINITY_LAYOUTS)}")
        if isinstance(neighbourhood, bool) or not isinstance(neighbourhood, int) or neighbourhood < 1 or not neighbourhood % 2:
            raise SettingsError(f"neighbourhood={neighbourhood!r}: expected an odd integer >= 1 (the paper uses 3 to 9)")
        super().__init__(feature_dim, num_classes, **basnet)
        if affinity_modulation:
            self.embed1 = nn.Conv1d(feature_dim, embed_hidden, 3, padding=1)
            self.embed2 = nn.Conv1d(embed_hidden, embed_dim, 3, padding=1)

    def make_cas_module(self, in_dim, hidden, num_outputs, dropout):
        """Kernel h (`neighbourhood`), affinity-modulated in `affinity_layout`."""
        return CASModule(in_dim, hidden, num_outputs, dropout, bias=self.conv_bias, kernel=self.neighbourhood,
                         layout=self.affinity_layout)

    def context(self, x, m):
        """L2-normalised embedding (B, T, E) and the local affinity (B, h, T) it gives; none
        without the affinity module."""
        if not self.affinity_modulation:
            return {}, None
        e = F.leaky_relu(self.embed1(x)) * m
        e = F.normalize(self.embed2(e), dim=1) * m
        return {"embedding": e.transpose(1, 2)}, local_affinity(e, self.neighbourhood)

    def first_layer_outputs(self, first_supp):
        """magnitude (B, T): L2 norm over channels of the suppressed branch's first layer."""
        return {"magnitude": first_supp.norm(dim=1)}

    @torch.no_grad()
    def infer(self, features):
        """BaS-Net's inference plus extras["magnitude"] (T,): the first-layer feature norm,
        min-max normalised over the video (`feature_magnitude`)."""
        inference, out = self._infer(features)
        inference.extras["magnitude"] = feature_magnitude(out["magnitude"][0].float().cpu().numpy()).astype(np.float32)
        return inference

    @torch.no_grad()
    def detect(self, features, cfg):
        """CAS proposals plus, with `magnitude_thresholds`, the runs of the feature magnitude at or
        above each threshold for every selected class (OIC on that class's raw CAS), one NMS."""
        inference = self.infer(features)
        thresholds = magnitude_thresholds(cfg.get("magnitude_thresholds"))
        proposals = cas_detections(inference.cas, inference.video_scores, cfg,
                                   agnostic_signal=inference.extras["magnitude"] if len(thresholds) else None,
                                   agnostic_thresholds=thresholds)
        return proposals, inference

    def video_loss(self, logits, target):
        """BackTAL: softmax cross-entropy against L1-normalised labels."""
        return video_label_loss(logits, target)

    def click_losses(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """click (frame CE to background), separation and affinity terms; zero without clicks."""
        C = self.num_classes
        mask = batch["mask"]
        clicked = batch["background"] & mask
        positive = batch["labels"] > 0
        cas_base = out["cas_base"]
        n_clicks = clicked.sum(1)
        has = n_clicks > 0
        n_videos = has.sum().clamp(min=1)

        log_bg = F.log_softmax(cas_base, -1)[..., C]
        click = -(log_bg * clicked).sum() / clicked.sum().clamp(min=1)

        bg_value = (cas_base[..., :C] * clicked.unsqueeze(-1)).sum(1) / n_clicks.clamp(min=1).unsqueeze(-1)
        pair = torch.stack([out["video_logits_base"][:, :C], bg_value], -1)
        nll = -F.log_softmax(pair, -1)[..., 0] * positive
        per_video = nll.sum(1) / positive.sum(1).clamp(min=1)
        separation = (per_video * has).sum() / n_videos

        affinity = cas_base.new_zeros(())
        k = topk_count(mask, mask.shape[1], self.topk_fraction)
        for b in (torch.nonzero(has).flatten().tolist() if self.affinity_modulation else []):
            affinity = affinity + self._affinity_loss(out, b, clicked[b], positive[b], mask[b], int(k[b]))
        return {"click": click, "separation": separation, "affinity": affinity / n_videos}

    def _affinity_loss(self, out, b, clicked, positive, valid, k) -> torch.Tensor:
        """Four hinge terms of one video between clicked-background and top-k action embeddings."""
        emb = out["embedding"][b]
        bg = emb[clicked]
        cas = out["cas_supp"][b, :, : self.num_classes][:, positive].masked_fill(~valid.unsqueeze(-1), float("-inf"))
        fg = emb[cas.topk(k, dim=0).indices.flatten()]
        same_bg = F.relu(self.tau_same - (bg @ bg.T).min(1).values).mean()
        if not len(fg):
            return same_bg
        same_fg = F.relu(self.tau_same - (fg @ fg.T).min(1).values).mean()
        cross = fg @ bg.T
        diff = F.relu(cross.max(1).values - self.tau_diff).mean() + F.relu(cross.max(0).values - self.tau_diff).mean()
        return same_fg + same_bg + diff

    def compute_losses(self, batch, epoch):
        out = self(batch["features"], batch["mask"])
        losses = self.suppression_losses(out, batch)
        losses.update(self.click_losses(out, batch))
        losses["total"] = (losses["base"] + losses["supp"] + self.norm_weight * losses["norm"]
                           + self.click_weight * losses["click"] + self.separation_weight * losses["separation"]
                           + self.affinity_weight * losses["affinity"])
        return losses

    def check_items(self, items):
        """Refuse to train when no training video has a background click (clicks never loaded)."""
        if not any(len(it.clicks) for it in items):
            raise LocalizerError(
                f"BackTAL needs background clicks: none of the {len(items)} training videos has one; "
                "pass --clicks FILE or create them with wtal clicks simulate"
            )


def magnitude_thresholds(setting: Any) -> np.ndarray:
    """Thresholds of the feature-magnitude proposals from `magnitude_thresholds`: None or empty
    (none), else start, stop, step (stop excluded, as np.arange)."""
    if setting is None or (isinstance(setting, (tuple, list)) and not len(setting)):
        return np.zeros(0)
    try:
        start, stop, step = (float(v) for v in setting)
    except (TypeError, ValueError):
        raise SettingsError(f"magnitude_thresholds={setting!r}: expected start,stop,step or empty") from None
    if not step > 0:
        raise SettingsError(f"magnitude_thresholds={setting!r}: the step must be > 0")
    return threshold_range(start, stop, step)
