"""CleanNet: contrast-based localization evaluation network.

Liu et al., "Weakly Supervised Temporal Action Localization through Contrast based Evaluation
Networks", ICCV 2019 (`papers/cleannet.txt`). No public implementation exists; this module is
wtal's reference one. Equation numbers are the paper's. Time is continuous in snippet units
(snippet t covers [t, t+1), t = 0 ... T-1 for a video of valid length T). Choices the paper leaves
open are marked [open] with the reason for the value taken.

Equation-to-code map
--------------------
- Eq. (1)  Psi(t) = (Psi^r(t) + Psi^f(t)) / 2 ............ `CleanNet.heads`, the two halves of
  `self.classifier`'s output averaged.
- Eq. (2)  [Psi^r; Psi^f] = W^c F(t) + b^c, W^c in R^{2N x 2D} ... `self.classifier` (Linear 2D -> 2N).
- Eq. (3)  phi(t) = w^a F(t) + b^a ......................... `self.attention` (Linear 2D -> 1), in
  `CleanNet.heads`.
- Eq. (4)  W^c = blockdiag(W^{c_r}, W^{c_f}), b^c = [b^{c_r}; b^{c_f}] ... `CleanNet.load_heads`
  (released heads) and `CleanNet._init_block_diagonal` (random blocks, same structure).
- Eq. (5)  w^a = [w^{a_r} w^{a_f}] / 2, b^a = (b^{a_r} + b^{a_f}) / 2 ... `CleanNet.load_heads`.
- Sec. 3.3.1 (unnumbered) x_c = a_w r_c + tau, x_w = a_w exp(r_w) (the text typesets the second
  as "x_c ="), x_s = x_c - x_w / 2, x_e = x_c + x_w / 2 ....... `CleanNet.generate`, last lines.
- Fig. 2 / Sec. 3.3.1 three stacked temporal convolutions, TSN sampling of K segments per anchor,
  "another convolutional layer" giving the regression values ...... `CleanNet.generate`
  (`self.trunk`, the TSN indices, `self.regressor`).
- Eq. (6)  c = (psi_max - psi_min) / abs(psi_max^idx - psi_min^idx) (the left-hand side is
  typeset "m", a typo for c), window 7, stride 1, padding 3 (footnote 2) ... `local_extrema`,
  `temporal_edgeness`.
- Eq. (7)  sign mask m(t) = 1 if psi_min^idx <= t < psi_max^idx, -1 if psi_min^idx > t >=
  psi_max^idx, else 0; e = m * c ............................ `temporal_edgeness`.
- Eq. (8)  inflated / deflated regions, x_w / 4 on each side ..... `contrast_scores` (`BAND`).
- Eq. (9)  s_a = avg psi(x_s^def : x_e^def) ................. `contrast_scores`, "action".
- Eq. (10) s_s = avg e(x_s^inf : x_s^def) - avg psi(x_s^inf : x_s) ... `contrast_scores`, "start".
- Eq. (11) s_e = -avg e(x_e^def : x_e^inf) - avg psi(x_e : x_e^inf) ... `contrast_scores`, "end".
- Eq. (12) s = s_a + (s_s + s_e) / 2 ........................ `contrast_scores`, "total".
- Sec. 3.4 anchor filter (anchors centred on a snippet whose psi_i or phi is below a threshold
  are discarded, per class i) ............................... `CleanNet.anchor_keep`.
- Sec. 3.4 positives: s(P) > 0.5, per class ................. `CleanNet.compute_losses` (`POSITIVE`).
- Eq. (13) L_reg = 1/|P| sum_P max(m - s(P), 0) ............. `CleanNet.compute_losses`, "reg".
- Sec. 3.4 (unnumbered) x = sum_t phi(t) Psi(t), cross-entropy with l1-normalised y ("the same
  as UntrimmedNet") ........................................ `CleanNet.video_scores`,
  `video_label_loss`.
- Sec. 3.4 joint fine-tuning (C5): snippets not covered by a positive proposal are left out of
  the classification loss .................................. `CleanNet.compute_losses`,
  `covered_snippets`.
- Sec. 4.1 SGD, lr 1e-4 divided by 10 every 200 videos, one whole video per batch ......
  `train_defaults`, `CleanNet.fit_step`.
- Sec. 4.1 test: classes with score > 0.1, NMS at 0.4 ........ `test_defaults`, `CleanNet.detect`.

Choices the paper leaves open
-----------------------------
- Softmax: Psi and phi are linear (Eqs. 1-3); the evaluator needs SCP in [0, 1] (threshold 0.5,
  margin), and "the same as UntrimmedNet" fixes the rest: psi = softmax over classes of Psi,
  attention = softmax over time of phi, as UntrimmedNet's soft selection does [open].
- Random initialisation when no released heads are given: the diagonal blocks of Eq. (4) drawn
  as PyTorch's Linear default, the off-diagonal blocks zero, so that both streams start
  independent as in UntrimmedNet; the stream split is the first ceil(2D/2) feature columns (RGB)
  and the rest (flow), wtal's feature layout [open].
- No dropout by default: the paper mentions none, and on wtal's synthetic set dropout 0.5 on the
  features lowered mAP@0.5 from 72 to 62 at a short schedule. `dropout` (UntrimmedNet trains its
  heads with dropout) applies to the classification loss only; the evaluator, the anchor filter,
  positives and L_reg always use a clean pass, as at test [open].
- Generator: kernel 3 and ReLU for the three convolutions, width `hidden` 256, K = 3 segments,
  one (r_c, r_w) pair per anchor size from the kernel-K convolution, which starts at zero so that
  the untrained generator proposes the anchors themselves (the paper's Plain-Model); TSN samples
  are random in their segment while training and the segment's middle at test; r_w is clamped
  to [-4, 4], proposals are clipped to [0, T) with a least width of 0.5 snippet [open].
- Eq. (6) ties: the first index of the window maximum / minimum is taken (what PyTorch's
  max_pool1d returns on CPU); a constant window has c = 0 (0 / 0); positions outside the video
  are never selected (the -inf padding of max_pool1d) [open].
- Region averages integrate the piecewise-constant sequences exactly over real-valued
  boundaries, so s is differentiable in the proposal boundaries (that is what lets L_reg train the
  generator); regions are clipped to the video, and a region left empty averages to 0 [open].
- Anchor filter thresholds (not given): psi_i(t) >= `anchor_scp_threshold` 0.1 (the paper's own
  class-score threshold) and attention weight softmax_t(phi)(t) >= `anchor_sap_threshold` / T
  (its share relative to the uniform 1 / T: phi is a logit whose scale depends on training, the
  weights sum to 1 whatever T is). The attention threshold defaults to 0 (no attention filter):
  on the THUMOS14-like benchmark (scale 0.25, 32 dims per stream, classification converged) every
  value tried lowered the average mAP monotonically (0: 38.3, 0.01: 33.8, 0.2: 24.3, 1: 17.0,
  seed 0), because UntrimmedNet-style softmax attention peaks on a few snippets and leaves most
  action snippets below the uniform share; on wtal's easy synthetic set 1.0 helps (mAP@0.5 72 vs
  46), so the setting stays. The same filter selects the anchors scored at test ("the rest steps
  remain the same", Sec. 4.2) [open].
- Margin m = 2: s <= 2 for SCP in [0, 1] (s_a, s_s, s_e <= 1), so every positive gets gradient
  ("m ... to ensure L_reg be larger than 0") [open].
- Schedule: the paper fine-tunes from released UntrimmedNet heads, which wtal does not have.
  Stage 1 trains SCP / SAP alone (the UntrimmedNet stage, Sec. 3.4 "the solely training of the
  action classification") for `cls_epochs` 20 epochs with Adam (`cls_lr` 1e-4, wtal's MIL
  baseline rate): at one video per step that is 4000 steps on THUMOS14's 200 videos, three times
  MIL's 1300 (100 epochs at batch 16); the paper's SGD 1e-4 is a fine-tuning rate, and its clock
  gives random heads about 600 useful steps. Stage 2 is the paper's: SGD lr 1e-4 / 10 every 200
  videos counted from its first step, momentum 0.9 and weight decay 5e-4 [open], on L_cls (joint
  fine-tuning C5 throughout, the full CleanNet of Table 2) + L_reg; the decay stops at `min_lr`
  1e-7 (three decays, where THUMOS14's 600 videos of 3 epochs end), so that on ActivityNet-sized
  epochs the rate never underflows [open]. With `untrimmednet_heads`, a torch file (read with
  weights_only) of the released per-stream heads (`HEAD_FIELDS`: rgb / flow classification
  weight (N, D_stream) and bias (N,), attention weight (D_stream,) and bias), the heads start as
  Eqs. (4)-(5) say; set `cls_epochs=0` to fine-tune from them as the paper does.
- Whole videos in training and test (`train_sampling` and `test_sampling` "native", so
  `max_len` and `test_len` do not apply), as the paper's one whole video per batch: anchors and
  regressions are in snippets, and a video subsampled in training only would change their scale.
- A video without positives keeps every snippet in L_cls; classes below 0.1 everywhere fall back
  to the top one at test; the score of a detection is s(P) [open].
"""
from __future__ import annotations

import os
from typing import cast

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .._io import load_torch_dict
from ..errors import SettingsError, WtalError
from ..postprocess.proposals import (
    POSTPROCESS_DEFAULTS,
    Proposal,
    select_classes,
    suppress,
)
from .base import Inference, Localizer, register, video_label_loss

WINDOW = 7  # footnote 2: max / min pooling kernel 7, stride 1, padding 3
BAND = 0.25  # Eq. (8): inflate / deflate by x_w / 4
POSITIVE = 0.5  # Sec. 3.4: a proposal is positive when s(P) > 0.5


class HeadsError(WtalError, ValueError):
    """A file of released UntrimmedNet heads that cannot be used; the message names file and field."""


# one row per tensor of a heads file: (field, shape as symbols); N classes, Dr / Df stream widths
HEAD_FIELDS = (
    ("rgb_cls_weight", ("N", "Dr")), ("rgb_cls_bias", ("N",)),
    ("flow_cls_weight", ("N", "Df")), ("flow_cls_bias", ("N",)),
    ("rgb_att_weight", ("Dr",)), ("rgb_att_bias", ()),
    ("flow_att_weight", ("Df",)), ("flow_att_bias", ()),
)


def read_heads(path: str | os.PathLike, num_classes: int, feature_dim: int) -> dict[str, torch.Tensor]:
    """The tensors of a released-heads file (a torch dict with `HEAD_FIELDS`), checked against N
    classes and 2D = Dr + Df feature columns; attention weights may be (D,) or (1, D), biases
    () or (1,)."""
    payload = load_torch_dict(path, "untrimmednet_heads", HeadsError, [key for key, _ in HEAD_FIELDS])
    out, sizes = {}, {"N": num_classes}
    for key, _ in HEAD_FIELDS:
        t = payload[key]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise HeadsError(f"{path}: field {key}: expected a float tensor")
        out[key] = t.detach().float().reshape(-1) if key.endswith(("att_weight", "att_bias")) else t.float()
    sizes["Dr"], sizes["Df"] = out["rgb_cls_weight"].shape[-1], out["flow_cls_weight"].shape[-1]
    if sizes["Dr"] + sizes["Df"] != feature_dim:
        raise HeadsError(f"{path}: fields rgb_cls_weight / flow_cls_weight: stream widths {sizes['Dr']} + "
                         f"{sizes['Df']} do not add up to the feature width {feature_dim}")
    for key, symbols in HEAD_FIELDS:
        want = tuple(sizes[s] for s in symbols) if symbols else (1,)
        if tuple(out[key].shape) != want:
            raise HeadsError(f"{path}: field {key}: shape {tuple(payload[key].shape)}, expected {want}")
        if not torch.isfinite(out[key]).all():
            raise HeadsError(f"{path}: field {key}: non-finite values")
    return out


# --------------------------------------------------------------------------- evaluator
def local_extrema(seq: torch.Tensor, valid: torch.Tensor, window: int = WINDOW):
    """Sliding max and min of (N, T) `seq` (window `window`, stride 1) and their indices, for the
    positions inside the video (`valid`); outside positions are never selected, ties take the
    first index. Returns psi_max, psi_max^idx, psi_min, psi_min^idx (Eq. 6)."""
    r = window // 2
    T = seq.shape[-1]
    offset = torch.arange(T, device=seq.device) - r

    def pool(x):
        x = F.pad(x.masked_fill(~valid, float("-inf")), (r, r), value=float("-inf"))
        win = x.unfold(-1, window, 1)  # (N, T, window)
        j = win.argmax(-1)
        return win.gather(-1, j.unsqueeze(-1)).squeeze(-1), j + offset

    high, i_high = pool(seq)
    neg_low, i_low = pool(-seq)
    zero = seq.new_zeros(())
    return torch.where(valid, high, zero), i_high, torch.where(valid, -neg_low, zero), i_low


def temporal_edgeness(scp: torch.Tensor, lengths: torch.Tensor | None = None, window: int = WINDOW) -> torch.Tensor:
    """Temporal edgeness e = m * c (Eqs. 6-7) of (N, T) SCP sequences; 0 past `lengths`."""
    T = scp.shape[-1]
    t = torch.arange(T, device=scp.device)
    if lengths is None:
        lengths = torch.full(scp.shape[:1], T, device=scp.device)
    valid = t.view(1, -1) < lengths.view(-1, 1)
    high, i_high, low, i_low = local_extrema(scp, valid, window)
    contrast = (high - low) / (i_high - i_low).abs().clamp(min=1).to(scp.dtype)  # Eq. (6)
    sign = ((i_low <= t) & (t < i_high)).to(scp.dtype) - ((i_low > t) & (t >= i_high)).to(scp.dtype)  # Eq. (7)
    return torch.where(valid, sign * contrast, scp.new_zeros(()))


def region_mean(cum: torch.Tensor, seq: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Mean of the piecewise-constant (N, T) `seq` over [lo, hi) for (N, P) boundaries in [0, T]
    (0 for an empty region). `cum` is the (N, T + 1) prefix sum of `seq` starting at 0.
    Differentiable in lo and hi."""
    T = seq.shape[-1]

    def integral(p):
        i = p.detach().floor().long().clamp(0, T - 1)
        return cum.gather(-1, i) + (p - i.to(p.dtype)) * seq.gather(-1, i)

    return (integral(hi) - integral(lo)) / (hi - lo).clamp(min=1e-6)


def contrast_scores(scp: torch.Tensor, edgeness: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor,
                    lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """Action, start, end and contrast scores (Eqs. 8-12) of (N, P) proposals [x_s, x_e) on (N, T)
    SCP and edgeness sequences; every region is clipped to [0, length)."""
    zero = scp.new_zeros(scp.shape[:-1] + (1,))
    cum_p = torch.cat([zero, scp.cumsum(-1)], -1)
    cum_e = torch.cat([zero, edgeness.cumsum(-1)], -1)
    top = lengths.to(scp.dtype).view(-1, 1).expand_as(starts)
    quarter = BAND * (ends - starts)  # Eq. (8)

    def clip(p):
        return torch.minimum(p.clamp(min=0), top)

    s_inf, s_def = clip(starts - quarter), clip(starts + quarter)
    e_def, e_inf = clip(ends - quarter), clip(ends + quarter)
    xs, xe = clip(starts), clip(ends)
    action = region_mean(cum_p, scp, s_def, e_def)  # Eq. (9)
    start = region_mean(cum_e, edgeness, s_inf, s_def) - region_mean(cum_p, scp, s_inf, xs)  # Eq. (10)
    end = -region_mean(cum_e, edgeness, e_def, e_inf) - region_mean(cum_p, scp, xe, e_inf)  # Eq. (11)
    return {"action": action, "start": start, "end": end, "total": action + 0.5 * (start + end)}  # Eq. (12)


def evaluate_proposals(scp: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor,
                       lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The action proposal evaluator (Sec. 3.3.2) on (N, T) SCP sequences (ignored past `lengths`)
    for (N, P) proposals: `temporal_edgeness`, then `contrast_scores`."""
    if lengths is None:
        lengths = torch.full(scp.shape[:1], scp.shape[-1], device=scp.device)
    valid = torch.arange(scp.shape[-1], device=scp.device).view(1, -1) < lengths.view(-1, 1)
    scp = scp * valid.to(scp.dtype)
    return contrast_scores(scp, temporal_edgeness(scp, lengths), starts, ends, lengths)


def covered_snippets(starts: torch.Tensor, ends: torch.Tensor, keep: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) bool: snippets [t, t+1) that overlap at least one kept (B, P) proposal [start, end)."""
    first = starts.floor().long().clamp(0, T)
    last = ends.ceil().long().clamp(0, T)
    w = keep.to(torch.long)
    count = torch.zeros(starts.shape[0], T + 1, dtype=torch.long, device=starts.device)
    count.scatter_add_(1, first, w)
    count.scatter_add_(1, last, -w)
    return count.cumsum(1)[:, :T] > 0


# ------------------------------------------------------------------------------- model
@register
class CleanNet(Localizer):
    anchor_widths: torch.Tensor  # buffer (register_buffer in __init__)
    name = "cleannet"
    paper = "Contrast-based evaluation networks, CleanNet (Liu et al., ICCV 2019)"
    train_defaults = {
        "cls_lr": 1e-4,
        "lr": 1e-4,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "lr_step_videos": 200,
        "min_lr": 1e-7,
        "batch_size": 1,
        "epochs": 23,
        "max_len": 750,
        "train_sampling": "native",
        "untrimmednet_heads": "",
    }
    test_defaults = {
        "class_threshold": 0.1,
        "nms_threshold": 0.4,
        "test_sampling": "native",
        "test_len": 750,
        "class_fallback": "top",
        "nms_overlap": POSTPROCESS_DEFAULTS["nms_overlap"],
        "max_detections": POSTPROCESS_DEFAULTS["max_detections"],
    }

    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 256, anchors: tuple = (1, 2, 4, 8, 16, 32),
                 segments: int = 3, dropout: float = 0.0, anchor_scp_threshold: float = 0.1,
                 anchor_sap_threshold: float = 0.0, reg_margin: float = 2.0, cls_epochs: int = 20):
        super().__init__(feature_dim, num_classes)
        self.anchors = tuple(anchors)  # the other arguments are attributes already (Localizer records them)
        if not self.anchors or min(self.anchors) <= 0:
            raise SettingsError(f"anchors must be positive widths in snippets, got {self.anchors}")
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, 2 * num_classes)  # Eq. (2)
        self.attention = nn.Linear(feature_dim, 1)  # Eq. (3)
        self._init_block_diagonal()
        self.trunk = nn.ModuleList([nn.Conv1d(feature_dim if i == 0 else hidden, hidden, 3, padding=1) for i in range(3)])
        self.regressor = nn.Conv1d(hidden, 2 * len(self.anchors), segments)
        nn.init.zeros_(self.regressor.weight)
        nn.init.zeros_(cast(torch.Tensor, self.regressor.bias))
        self.register_buffer("anchor_widths", torch.tensor([float(a) for a in self.anchors]), persistent=False)

    # ------------------------------------------------------------- classification
    def _stream_widths(self) -> tuple[int, int]:
        return self.feature_dim - self.feature_dim // 2, self.feature_dim // 2

    @torch.no_grad()
    def _init_block_diagonal(self) -> None:
        """Eq. (4)'s block structure with random blocks: each stream's N x D block drawn like an
        nn.Linear of that width, the cross-stream blocks zero."""
        N, (dr, df) = self.num_classes, self._stream_widths()
        self.classifier.weight.zero_()
        for rows, cols in ((slice(0, N), slice(0, dr)), (slice(N, 2 * N), slice(dr, dr + df))):
            width = cols.stop - cols.start
            if width:
                bound = 1.0 / width ** 0.5
                self.classifier.weight[rows, cols].uniform_(-bound, bound)
                self.classifier.bias[rows].uniform_(-bound, bound)

    @torch.no_grad()
    def load_heads(self, path: str | os.PathLike) -> None:
        """Initialise the heads from released per-stream UntrimmedNet heads (Eqs. 4-5)."""
        h = read_heads(path, self.num_classes, self.feature_dim)
        N, dr = self.num_classes, h["rgb_cls_weight"].shape[1]
        w = torch.zeros_like(self.classifier.weight)
        w[:N, :dr], w[N:, dr:] = h["rgb_cls_weight"], h["flow_cls_weight"]
        self.classifier.weight.copy_(w)
        self.classifier.bias.copy_(torch.cat([h["rgb_cls_bias"], h["flow_cls_bias"]]))
        self.attention.weight.copy_(0.5 * torch.cat([h["rgb_att_weight"], h["flow_att_weight"]]).view(1, -1))
        self.attention.bias.copy_(0.5 * (h["rgb_att_bias"] + h["flow_att_bias"]))

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SCP logits Psi (B, T, N) as the mean of the two streams' predictions (Eqs. 1-2) and SAP
        logits phi (B, T) (Eq. 3)."""
        both = self.classifier(x)
        N = self.num_classes
        return 0.5 * (both[..., :N] + both[..., N:]), self.attention(x).squeeze(-1)

    @staticmethod
    def video_scores(scp_logits: torch.Tensor, sap_logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Video prediction x = sum_t phi(t) Psi(t) over the kept snippets (Sec. 3.4, UntrimmedNet's
        soft selection: softmax over time of phi, softmax over classes of Psi)."""
        att = torch.softmax(sap_logits.masked_fill(~keep, float("-inf")), 1)
        return (att.unsqueeze(-1) * torch.softmax(scp_logits, -1)).sum(1)

    # ------------------------------------------------------------------ generator
    def forward(self, features, mask=None):
        """SCP logits (B, T, N) and SAP logits (B, T) (dropout while training), video scores (B, N)
        and, per anchor (B, T, A), the regressed proposal starts / ends in snippets."""
        B, T, _ = features.shape
        m = torch.ones(B, T, dtype=torch.bool, device=features.device) if mask is None else mask
        scp_logits, sap_logits = self.heads(self.drop(features))
        out = {"scp_logits": scp_logits, "sap_logits": sap_logits,
               "video_scores": self.video_scores(scp_logits, sap_logits, m)}
        out.update(self.generate(features, m.sum(1)))
        return out

    def generate(self, features: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """Action proposal generator (Fig. 2): three temporal convolutions, TSN sampling of K
        segments inside every anchor, a kernel-K convolution to (r_c, r_w), then Sec. 3.3.1's
        decoding x_c = a_w r_c + tau, x_w = a_w exp(r_w)."""
        B, T, _ = features.shape
        dev, dt = features.device, features.dtype
        valid = (torch.arange(T, device=dev).view(1, T, 1) < lengths.view(B, 1, 1)).to(dt)
        h = features * valid
        for conv in self.trunk:  # re-masked so padding never reaches a valid snippet
            h = torch.relu(conv(h.transpose(1, 2))).transpose(1, 2) * valid
        A, K = len(self.anchors), self.segments
        tau = torch.arange(T, device=dev, dtype=dt).view(1, T, 1) + 0.5
        width = self.anchor_widths.to(dt).view(1, 1, A)
        offset = (torch.rand(B, T, A, K, device=dev, dtype=dt) if self.training
                  else torch.full((B, T, A, K), 0.5, device=dev, dtype=dt))
        seg = torch.arange(K, device=dev, dtype=dt).view(1, 1, 1, K)
        pos = (tau - width / 2).unsqueeze(-1) + (seg + offset) * (width / K).unsqueeze(-1)
        idx = torch.minimum(pos.floor().long().clamp(min=0), (lengths - 1).clamp(min=0).view(B, 1, 1, 1))
        # the kernel-K convolution over the K samples: sum_k W_k h[idx_k] + b, with each W_k h
        # computed once per snippet; tap k of anchor a reads row (a * K + k) * T + idx
        proj = torch.einsum("bti,aoik->bakto", h,
                            self.regressor.weight.view(A, 2, -1, K)).reshape(B, A * K * T, 2)
        rows = (torch.arange(A, device=dev).view(1, 1, A, 1) * K + torch.arange(K, device=dev)) * T + idx
        raw = proj.gather(1, rows.reshape(B, -1, 1).expand(-1, -1, 2)).view(B, T, A, K, 2).sum(3)
        raw = raw + cast(torch.Tensor, self.regressor.bias).view(A, 2)
        x_c = tau + width * raw[..., 0]
        x_w = width * torch.exp(raw[..., 1].clamp(-4.0, 4.0))
        top = lengths.to(dt).view(B, 1, 1)
        min_w = 0.5
        starts = torch.minimum((x_c - x_w / 2).clamp(min=0), (top - min_w).clamp(min=0))
        ends = torch.minimum(torch.maximum(x_c + x_w / 2, starts + min_w), top.expand_as(starts))
        return {"starts": starts, "ends": ends}

    # --------------------------------------------------------------------- losses
    def anchor_keep(self, scp: torch.Tensor, sap_logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Sec. 3.4 anchor filter: (n, T) bool, True where snippet t of an (n, T) class SCP
        sequence has psi_i(t) >= anchor_scp_threshold and attention T softmax_t(phi)(t) (its share
        relative to the uniform 1 / T) >= anchor_sap_threshold (`sap_logits` (n, T), the row's
        video); anchors centred on other snippets are discarded."""
        valid = torch.arange(scp.shape[-1], device=scp.device).view(1, -1) < lengths.view(-1, 1)
        share = torch.softmax(sap_logits.masked_fill(~valid, float("-inf")), -1) * lengths.view(-1, 1).to(scp.dtype)
        return valid & (scp >= self.anchor_scp_threshold) & (share >= self.anchor_sap_threshold)

    def score_pairs(self, scp: torch.Tensor, sap_logits: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor,
                    lengths: torch.Tensor, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Contrast scores (n, T * A) of every anchor's proposal for n (video, class) `pairs` and the
        anchor filter of each, from (B, T, N) SCP probabilities and (B, T) SAP logits."""
        b, c = pairs.unbind(1)
        seq = scp[b, :, c]
        A = len(self.anchors)
        keep = self.anchor_keep(seq, sap_logits[b], lengths[b]).repeat_interleave(A, 1)
        s = evaluate_proposals(seq, starts.flatten(1)[b], ends.flatten(1)[b], lengths[b])["total"]
        return s, keep

    def compute_losses(self, batch, epoch):
        """Stage 1 (epoch < cls_epochs): L_cls. Stage 2: L_cls over the snippets covered by
        positives (joint fine-tuning) + L_reg (Eq. 13), with s on clean, detached SCP so that L_reg
        trains the generator only."""
        x, mask, labels = batch["features"], batch["mask"], batch["labels"]
        out = self(x, mask)
        reg = x.new_zeros(())
        if epoch >= self.cls_epochs:
            with torch.no_grad():  # clean (no dropout) and detached: L_reg reaches the generator only
                clean_scp, clean_sap = self.heads(x) if self.training else (out["scp_logits"], out["sap_logits"])
            clean_scp, clean_sap = clean_scp.detach(), clean_sap.detach()
            lengths = mask.sum(1)
            pairs = (labels > 0).nonzero()
            s, keep = self.score_pairs(torch.softmax(clean_scp, -1), clean_sap, out["starts"], out["ends"],
                                       lengths, pairs)
            positive = keep & (s.detach() > POSITIVE)
            if positive.any():
                reg = torch.relu(self.reg_margin - s[positive]).mean()  # Eq. (13)
            video_pos = torch.zeros(x.shape[0], s.shape[1], dtype=torch.long, device=x.device)
            video_pos = video_pos.index_add(0, pairs[:, 0], positive.long()) > 0
            covered = covered_snippets(out["starts"].flatten(1).detach(), out["ends"].flatten(1).detach(),
                                       video_pos, x.shape[1]) & mask
            keep_snippets = torch.where(covered.any(1, keepdim=True), covered, mask)
            out["video_scores"] = self.video_scores(out["scp_logits"], out["sap_logits"], keep_snippets)
        cls = video_label_loss(out["video_scores"], labels, probs=True)
        return {"cls": cls, "reg": reg, "total": cls + reg}

    # ------------------------------------------------------------------ schedule
    def make_optimizers(self, cfg):
        """Stage 1: Adam (`cls_lr`) on the classification heads; stage 2: the paper's SGD on every
        parameter, its rate set per step in `fit_step`. Loads `untrimmednet_heads` when given."""
        if cfg.get("untrimmednet_heads"):
            self.load_heads(cfg["untrimmednet_heads"])
        heads = list(self.classifier.parameters()) + list(self.attention.parameters())
        sgd = torch.optim.SGD(self.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
        for group in sgd.param_groups:
            group.update(base_lr=cfg["lr"], min_lr=cfg["min_lr"], lr_step_videos=int(cfg["lr_step_videos"]), videos_seen=0)
        return {"cls": torch.optim.Adam(heads, lr=cfg["cls_lr"], weight_decay=cfg["weight_decay"]), "main": sgd}

    def fit_step(self, batch, optimizers, epoch):
        """One step of the stage `epoch` is in; in stage 2 at lr = max(min_lr, lr x 0.1^(videos
        of stage 2 before this batch // lr_step_videos))."""
        if epoch < self.cls_epochs:
            opt = optimizers["cls"]
        else:
            opt = optimizers["main"]
            for g in opt.param_groups:
                g["lr"] = max(g["min_lr"], g["base_lr"] * 0.1 ** (g["videos_seen"] // max(1, g["lr_step_videos"])))
                g["videos_seen"] += len(batch["labels"])
        losses = self.compute_losses(batch, epoch)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    # ----------------------------------------------------------------- inference
    @staticmethod
    def _inference(out: dict[str, torch.Tensor]) -> Inference:
        """Inference of the first video of a forward pass: SCP as CAS, video scores, attention."""
        return Inference(
            cas=torch.softmax(out["scp_logits"][0], -1).float().cpu().numpy(),
            video_scores=out["video_scores"][0].float().cpu().numpy(),
            extras={"attention": torch.softmax(out["sap_logits"][0], 0).float().cpu().numpy()},
        )

    @torch.no_grad()
    def infer(self, features):
        self.eval()
        return self._inference(self(features.unsqueeze(0)))

    @torch.no_grad()
    def detect(self, features, cfg):
        """Per class with video score >= class_threshold (else the top one): the proposals of the
        anchors that pass the anchor filter, scored by s(P) (Eq. 12), then per-class NMS."""
        self.eval()
        out = self(features.unsqueeze(0))
        inference = self._inference(out)
        classes = select_classes(inference.video_scores, cfg["class_threshold"], cfg.get("class_fallback", "top"))
        pairs = torch.stack([torch.zeros(len(classes), dtype=torch.long), torch.from_numpy(classes).long()], 1)
        lengths = torch.tensor([features.shape[0]], device=features.device)
        s, keep = self.score_pairs(torch.softmax(out["scp_logits"], -1), out["sap_logits"], out["starts"], out["ends"],
                                   lengths, pairs.to(features.device))
        s_np, keep_np = s.float().cpu().numpy(), keep.cpu().numpy()
        starts, ends = out["starts"].flatten().float().cpu().numpy(), out["ends"].flatten().float().cpu().numpy()
        proposals = [Proposal(int(c), float(s_np[i, j]), float(starts[j]), float(ends[j]))
                     for i, c in enumerate(classes) for j in np.flatnonzero(keep_np[i])]
        return suppress(proposals, cfg), inference
