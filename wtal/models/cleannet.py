"""CleanNet: contrast-based localization evaluation network.

Liu et al., "Weakly Supervised Temporal Action Localization through Contrast based Evaluation
Networks", ICCV 2019. No public implementation exists; this module is wtal's reference one. The
equations are numbered E1 ... by wtal (the paper's own numbering could not be checked against
its text when this was written). Time is continuous in snippet units (snippet t covers
[t, t+1)); T is a video's valid length. From the paper: the SCP / SAP heads and attention-weighted
video score, anchors of 1-32 snippets with centre / log-width regression and TSN sampling, the
window-7 temporal contrast, the action / start / end scores and their sum, positives at s > 0.5,
a hinge loss with margin, joint fine-tuning on the snippets of positive proposals, SGD 1e-4 / 10
every 200 videos, NMS 0.4, class threshold 0.1. wtal's choices where the paper leaves them open
are marked [wtal].

Snippet classification and attention (UntrimmedNet-style linear heads on the features):

  (E1) p_t = softmax_c(W_cls x_t)                         snippet classification prediction (SCP)
  (E2) a_t = softmax_t(w_att . x_t)                       snippet attention prediction (SAP)
  (E3) y_hat = sum_t a_t p_t,  L_cls = -sum_c y_c log y_hat_c   (y the normalised video labels)

Anchor proposal generator: a temporal conv trunk h_t = relu(conv3(x)_t) [wtal]; at every snippet
centre c = t + 0.5 one anchor per width w in `anchors` (1, 2, 4, 8, 16, 32). The anchor is split
into K = `segments` (3 [wtal]) equal segments and one snippet is drawn from each (TSN sampling:
random inside the segment while training, its middle at test); the K trunk features form a
length-K sequence fed to a temporal conv of kernel K, then per-width linear heads give a
confidence o and offsets (dc, dw):

  (E4) c' = c + w dc,  w' = w exp(dw),  proposal [c' - w'/2, c' + w'/2) clipped to [0, T)

Contrast-based evaluator on the SCP sequence p_c of one class (pure functions `signed_edgeness`,
`contrast_scores`, `evaluate_proposals`), window W = 7, r = W // 2:

  (E5) M_t, m_t = max, min of p_c over [t - r, t + r] (outside the video counts as 0 [wtal])
  (E6) e_t = (M_t - m_t) sign(argmax - argmin)            signed edgeness: + rising, - falling
  For a proposal [t_s, t_e) of length L, delta = `band_ratio` x L (0.25 [wtal]); deflated
  region [t_s + delta, t_e - delta); start band [t_s - b, t_s + b) and end band [t_e - b, t_e + b)
  (the inflated region minus the deflated one) with b = max(delta, r) [wtal: a band narrower
  than the window's reach lets a one-snippet spike score a clean start and a clean end; its
  rising and falling edges cancel only in a band at least that wide]; all clipped to [0, T):
  (E7) s_a = mean p_c over the deflated region             action score
       s_s = mean e over the start band,  s_e = -mean e over the end band
  (E8) s = s_a + (s_s + s_e) / 2
  Region means integrate the piecewise-constant sequences exactly, so s is differentiable in
  the proposal boundaries (and in p).

Losses: s of each anchor's proposal is taken for the best of the video's labelled classes;
proposals with s > 0.5 (evaluated without gradient) are positives:

  (E9)  L_conf = hinge(1 - y o), averaged over positives (y = +1) and over negatives (y = -1),
        the two averages summed [wtal]
  (E10) L_reg = mean over positives of max(0, margin - s), margin 1.5 [wtal]; the gradient
        reaches the proposal boundaries (E4) and, during joint fine-tuning, the SCP too
  (E11) L = L_cls + L_conf + L_reg

Schedule [wtal, in epochs]: `loc_start_epoch` epochs of L_cls alone, then (E11); from
`joint_start_epoch` on (joint fine-tuning) the attention pooling (E3) drops every snippet that
no positive proposal covers (a video without positives keeps all). SGD with momentum 0.9 and
weight decay 5e-4 [wtal], lr 1e-4 divided by 10 every 200 videos seen.

Test: classes with y_hat >= 0.1 (else the top one); the generator's proposals (anchors with
o > 0; every anchor when none is) are scored by (E8) on that class's SCP; per-class NMS at 0.4.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..postprocess.proposals import POSTPROCESS_DEFAULTS, Proposal, select_classes, suppress
from .base import Inference, Localizer, register, video_label_loss


# --------------------------------------------------------------------------- evaluator
def signed_edgeness(scp: torch.Tensor, window: int = 7) -> torch.Tensor:
    """(E5-E6) signed temporal contrast of (..., T) sequences; positions outside count as 0."""
    shape = scp.shape
    r = window // 2
    flat = F.pad(scp.reshape(-1, 1, shape[-1]), (r, r), value=0.0)
    high, i_high = F.max_pool1d(flat, window, stride=1, return_indices=True)
    neg_low, i_low = F.max_pool1d(-flat, window, stride=1, return_indices=True)
    sign = torch.sign((i_high - i_low).to(scp.dtype))
    return ((high + neg_low) * sign).reshape(shape)


def region_mean(cum: torch.Tensor, seq: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Mean of the piecewise-constant (N, T) `seq` over [lo, hi) for (N, P) boundaries in [0, T].

    `cum` is the (N, T + 1) prefix sum of `seq` starting at 0. Differentiable in lo and hi.
    """
    T = seq.shape[-1]

    def integral(p):
        i = p.detach().floor().long().clamp(0, T - 1)
        return cum.gather(-1, i) + (p - i.to(p.dtype)) * seq.gather(-1, i)

    return (integral(hi) - integral(lo)) / (hi - lo).clamp(min=1e-6)


def contrast_scores(scp: torch.Tensor, edgeness: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor,
                    lengths: torch.Tensor, band_ratio: float = 0.25, min_band: float = 3.0) -> dict[str, torch.Tensor]:
    """(E7-E8) action, start, end and total scores of (N, P) proposals on (N, T) sequences.

    `lengths` (N,) are the valid lengths; regions are clipped to [0, length); `min_band` is the
    least half-width of the start and end bands.
    """
    zero = scp.new_zeros(scp.shape[:-1] + (1,))
    cum_p = torch.cat([zero, scp.cumsum(-1)], -1)
    cum_e = torch.cat([zero, edgeness.cumsum(-1)], -1)
    top = lengths.to(scp.dtype).view(-1, 1).expand_as(starts)
    delta = band_ratio * (ends - starts)
    band = delta.clamp(min=min_band)

    def clip(p):
        return torch.minimum(p.clamp(min=0), top)

    action = region_mean(cum_p, scp, clip(starts + delta), clip(ends - delta))
    start = region_mean(cum_e, edgeness, clip(starts - band), clip(starts + band))
    end = -region_mean(cum_e, edgeness, clip(ends - band), clip(ends + band))
    return {"action": action, "start": start, "end": end, "total": action + 0.5 * (start + end)}


def evaluate_proposals(scp: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, window: int = 7,
                       band_ratio: float = 0.25, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The contrast-based evaluator on (N, T) SCP sequences (zero beyond `lengths`) for (N, P)
    proposals: `signed_edgeness` then `contrast_scores`."""
    if lengths is None:
        lengths = torch.full(scp.shape[:1], scp.shape[-1], device=scp.device)
    valid = torch.arange(scp.shape[-1], device=scp.device).view(1, -1) < lengths.view(-1, 1)
    scp = scp * valid.to(scp.dtype)
    return contrast_scores(scp, signed_edgeness(scp, window), starts, ends, lengths, band_ratio, float(window // 2))


# ------------------------------------------------------------------------------- model
@register
class CleanNet(Localizer):
    name = "cleannet"
    train_defaults = {
        "lr": 1e-4,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "lr_step_videos": 200,
        "batch_size": 1,
        "epochs": 3,
        "max_len": 750,
        "train_sampling": "segments",
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
                 segments: int = 3, window: int = 7, band_ratio: float = 0.25, dropout: float = 0.5,
                 positive_threshold: float = 0.5, reg_margin: float = 1.5, loc_start_epoch: int = 1,
                 joint_start_epoch: int = 2):
        super().__init__(feature_dim, num_classes)
        self.hidden, self.anchors, self.segments, self.window = hidden, tuple(anchors), segments, window
        self.band_ratio, self.dropout = band_ratio, dropout
        self.positive_threshold, self.reg_margin = positive_threshold, reg_margin
        self.loc_start_epoch, self.joint_start_epoch = loc_start_epoch, joint_start_epoch
        if not self.anchors or min(self.anchors) <= 0:
            raise ValueError(f"anchors must be positive widths in snippets, got {self.anchors}")
        self.drop = nn.Dropout(dropout)
        self.scp = nn.Linear(feature_dim, num_classes)
        self.sap = nn.Linear(feature_dim, 1)
        self.trunk = nn.Conv1d(feature_dim, hidden, 3, padding=1)
        self.sampler_conv = nn.Conv1d(hidden, hidden, segments)
        self.head_weight = nn.Parameter(torch.randn(len(self.anchors), hidden, 3) * 0.01)
        self.head_bias = nn.Parameter(torch.zeros(len(self.anchors), 3))
        self.register_buffer("anchor_widths", torch.tensor([float(a) for a in self.anchors]), persistent=False)

    # ------------------------------------------------------------------ model
    def forward(self, features, mask=None):
        """SCP logits (B, T, C), SAP logits (B, T), video scores (B, C) and, per anchor
        (B, T, A), the confidence and the decoded proposal starts / ends (snippet units)."""
        B, T, _ = features.shape
        m = torch.ones(B, T, dtype=torch.bool, device=features.device) if mask is None else mask
        lengths = m.sum(1)
        x = self.drop(features)
        scp_logits = self.scp(x)
        sap_logits = self.sap(x).squeeze(-1)
        out = {"scp_logits": scp_logits, "sap_logits": sap_logits,
               "video_scores": self.video_scores(scp_logits, sap_logits, m)}
        out.update(self.generate(features, lengths))
        return out

    @staticmethod
    def video_scores(scp_logits: torch.Tensor, sap_logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(E3) attention-weighted SCP over the kept snippets."""
        att = torch.softmax(sap_logits.masked_fill(~keep, float("-inf")), 1)
        return (att.unsqueeze(-1) * torch.softmax(scp_logits, -1)).sum(1)

    def generate(self, features: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """Anchor proposals: TSN-sampled trunk features -> temporal conv -> confidence and (E4)."""
        B, T, _ = features.shape
        valid = torch.arange(T, device=features.device).view(1, T, 1) < lengths.view(B, 1, 1)
        h = torch.relu(self.trunk((features * valid.to(features.dtype)).transpose(1, 2))).transpose(1, 2)  # (B, T, H)
        A, K = len(self.anchors), self.segments
        centre = torch.arange(T, device=features.device, dtype=features.dtype).view(1, T, 1) + 0.5
        width = self.anchor_widths.to(features.dtype).view(1, 1, A)
        offset = torch.rand(B, T, A, K, device=features.device, dtype=features.dtype) if self.training \
            else torch.full((B, T, A, K), 0.5, device=features.device, dtype=features.dtype)
        seg = torch.arange(K, device=features.device, dtype=features.dtype).view(1, 1, 1, K)
        pos = (centre - width / 2).unsqueeze(-1) + (seg + offset) * (width / K).unsqueeze(-1)
        last = (lengths - 1).clamp(min=0).view(B, 1, 1, 1)
        idx = torch.minimum(pos.floor().long().clamp(min=0), last)
        # the kernel-K conv over the K sampled features, sum_k W_k h[idx_k] + b, with every W_k h
        # computed once per snippet instead of once per anchor
        H = h.shape[-1]
        proj = torch.einsum("bti,oik->btko", h, self.sampler_conv.weight).reshape(B, T * K, H)
        flat = (idx * K + torch.arange(K, device=features.device)).view(B, -1, 1).expand(-1, -1, H)
        z = torch.relu(proj.gather(1, flat).view(B, T, A, K, H).sum(3) + self.sampler_conv.bias)
        raw = torch.einsum("btah,aho->btao", z, self.head_weight) + self.head_bias
        conf, dc, dw = raw.unbind(-1)
        c = centre + width * dc
        w = width * torch.exp(dw.clamp(-4.0, 4.0))
        top = lengths.to(features.dtype).view(B, 1, 1)
        min_w = 0.5
        starts = torch.minimum((c - w / 2).clamp(min=0), (top - min_w).clamp(min=0))
        ends = torch.minimum(torch.maximum(c + w / 2, starts + min_w), top.expand_as(starts))
        return {"confidence": conf, "starts": starts, "ends": ends}

    # ----------------------------------------------------------------- losses
    def proposal_scores(self, scp_probs: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor,
                        lengths: torch.Tensor) -> torch.Tensor:
        """(E8) total score (B, C, P) of (B, P) proposals on every class's (B, T, C) SCP."""
        B, T, C = scp_probs.shape
        P = starts.shape[1]
        seq = scp_probs.transpose(1, 2).reshape(B * C, T)
        rep = lengths.repeat_interleave(C)
        s = evaluate_proposals(seq, starts.repeat_interleave(C, 0), ends.repeat_interleave(C, 0),
                               self.window, self.band_ratio, rep)["total"]
        return s.view(B, C, P)

    def compute_losses(self, batch, epoch):
        x, mask, labels = batch["features"], batch["mask"], batch["labels"]
        out = self(x, mask)
        zero = x.new_zeros(())
        terms = {"cls": zero, "conf": zero, "reg": zero}
        lengths = mask.sum(1)
        if epoch >= self.loc_start_epoch:
            joint = epoch >= self.joint_start_epoch
            B = x.shape[0]
            probs = torch.softmax(out["scp_logits"], -1)
            starts, ends = out["starts"].reshape(B, -1), out["ends"].reshape(B, -1)
            valid = (torch.arange(x.shape[1], device=x.device).view(1, -1, 1) < lengths.view(-1, 1, 1))
            valid = valid.expand_as(out["starts"]).reshape(B, -1)
            present = (labels > 0).unsqueeze(-1)
            scores = self.proposal_scores(probs if joint else probs.detach(), starts, ends, lengths)
            best = scores.masked_fill(~present, float("-inf")).max(1).values
            positive = (best.detach() > self.positive_threshold) & valid
            negative = ~positive & valid
            conf = out["confidence"].reshape(B, -1)
            for hinge in (torch.relu(1 - conf)[positive], torch.relu(1 + conf)[negative]):
                if hinge.numel():
                    terms["conf"] = terms["conf"] + hinge.mean()
            if positive.any():
                terms["reg"] = torch.relu(self.reg_margin - best[positive]).mean()
            if joint:
                covered = self.coverage(starts.detach(), ends.detach(), positive, x.shape[1])
                mask = mask & (covered | ~positive.any(1, keepdim=True))
                out["video_scores"] = self.video_scores(out["scp_logits"], out["sap_logits"], mask)
        terms["cls"] = video_label_loss(out["video_scores"], labels, probs=True)
        terms["total"] = terms["cls"] + terms["conf"] + terms["reg"]
        return terms

    @staticmethod
    def coverage(starts: torch.Tensor, ends: torch.Tensor, keep: torch.Tensor, T: int) -> torch.Tensor:
        """(B, T) bool: snippets whose centre lies inside at least one kept (B, P) proposal."""
        t = torch.arange(T, device=starts.device, dtype=starts.dtype).view(1, -1, 1) + 0.5
        inside = (t >= starts.unsqueeze(1)) & (t < ends.unsqueeze(1)) & keep.unsqueeze(1)
        return inside.any(-1)

    def make_optimizers(self, cfg):
        """SGD with momentum; the step-every-N-videos decay is applied in `fit_step`."""
        opt = torch.optim.SGD(self.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
        for group in opt.param_groups:
            group["base_lr"], group["lr_step_videos"], group["videos_seen"] = cfg["lr"], int(cfg["lr_step_videos"]), 0
        return {"main": opt}

    def fit_step(self, batch, optimizers, epoch):
        """One SGD step at lr = base_lr x 0.1^(videos seen before this batch // lr_step_videos)."""
        opt = optimizers["main"]
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * 0.1 ** (group["videos_seen"] // max(1, group["lr_step_videos"]))
            group["videos_seen"] += len(batch["video_ids"])
        return super().fit_step(batch, optimizers, epoch)

    # -------------------------------------------------------------- inference
    @staticmethod
    def _inference(out: dict[str, torch.Tensor]) -> Inference:
        """Inference of the first video of a forward pass: SCP as CAS, (E3) scores, attention."""
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
        """The generator's proposals (anchors with confidence > 0, all when none is), scored by
        the evaluator (E8) per kept class, then per-class NMS."""
        self.eval()
        out = self(features.unsqueeze(0))
        inference = self._inference(out)
        classes = select_classes(inference.video_scores, cfg["class_threshold"], cfg.get("class_fallback", "top"))
        keep = out["confidence"].reshape(-1) > 0
        if not keep.any():
            keep = torch.ones_like(keep)
        starts, ends = out["starts"].reshape(1, -1)[:, keep], out["ends"].reshape(1, -1)[:, keep]
        lengths = torch.tensor([features.shape[0]], device=features.device)
        scores = self.proposal_scores(torch.softmax(out["scp_logits"], -1), starts, ends, lengths)[0]
        s_np, e_np = starts[0].float().cpu().numpy(), ends[0].float().cpu().numpy()
        proposals = []
        for c in classes:
            sc = scores[c].float().cpu().numpy()
            proposals.extend(Proposal(int(c), float(v), float(a), float(b)) for v, a, b in zip(sc, s_np, e_np))
        return suppress(proposals, cfg), inference
