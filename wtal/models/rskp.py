"""RSKP: representative snippet knowledge propagation (Huang, Wang and Li, CVPR 2022).

"Weakly Supervised Temporal Action Localization via Representative Snippet Knowledge
Propagation". Snippet features are embedded (Linear D->E, ReLU, dropout 0.6; E = D by default)
and summarised per video into K = 8 representative snippets mu by expectation-maximisation
attention: learned bases mu(0), 2 iterations of (Eq. 2, 3)

    Z = softmax_K(5 * cos(x_t, mu_k)),   mu = Norm1(Z)^T x      (Norm1: columns sum to 1 over time)

The representatives are propagated back to the snippets by a bipartite random walk (Eq. 4-5),
in closed form (Eq. 6)

    F* = (1 - w) (I - w^2 Z Norm1(Z)^T)^-1 (w Z mu + F),   w = 0.5,

evaluated exactly with the Woodbury identity, so only a K x K system is solved
(`torch.linalg.solve`) and long videos cost O(T K) memory instead of O(T^2).
Three feature sets go through one FAC-Net-style head (scaled cosine classifiers, scale 20, with
C action centres + 1 background centre and a foreground centre): the original features (main
branch, "o"), the intra-video propagated ones ("m", bases = the video's own representatives) and,
after the warm-up, the inter-video propagated ones ("r", bases = the memory bank's
representatives of the video's labelled classes). The head gives a class-agnostic attention
a_t = sigmoid(20 cos(x_t, fg)); the CA video score classifies the attention-pooled feature
(target: labels, background 0); the MIL (class-wise attention) score classifies, per class, the
feature pooled by sigmoid(class score) (target: labels, background 1).

Memory bank: 5 representatives per class, ranked by their softmax class score; filled (eval
mode, one whole training video at a time, whatever `max_len` sampled for training) at the end of
epoch index `warmup` and used from epoch index `warmup + 1` on, as the official `processor.py`
does (101 warm-up epochs, 99 with memory at the defaults); then updated after each training
video's backward pass, so a step's later videos see its earlier ones (per labelled class, keep
the 5 best of bank + this video's representatives).

Loss (paper Eq. 8, weights from the paper / official code), per video:

    L = L_cls + alpha L_kd + 0.1 L_att,  alpha = 1.0 in the warm-up, `kd_weight_memory` = 0.5 once
        the memory branch runs (official processor.py sets lambda_s = 0.5 when it fills the bank;
        the paper's constant alpha = 1.0 is `kd_weight_memory=1.0`)
    L_cls = sum over branches o, m (and 0.5 x r after warm-up) of CE(CA) + 0.2 CE(MIL)
    L_kd  = CE(softmax(teacher / 0.2), log_softmax(o_frame / 0.2)) per snippet (Eq. 7),
            teacher = m_frame (0.8 m_frame + 0.2 r_frame after warm-up), detached
    L_att = mean of the k lowest - mean of the k highest attention of branch o, k = T // 8

A step takes the SUM of its 10 videos' losses (`batch_loss="sum"`): the official code
backpropagates each video and steps every 10 without dividing, so with Adam's coupled L2 a mean
would make the weight decay 5e-4 effectively 10x stronger; `batch_loss="mean"` is the
alternative. As there, each video of a step goes forward and backward alone at its own length
(a padded batch would spend most of its compute on padding: training takes whole videos of 23
to 2600 snippets). mu(0) is xavier-uniform as in the official `main_branch.py`; the paper's
(semi) orthogonal init (Sec. 3.2) is `bases_init="orthogonal"`.

Test: video score 0.6 o_CA + 0.4 m_CA; CAS = (0.6 softmax(o_frame) + 0.4 softmax(m_frame)) * a_o;
class threshold 0.1 (kept when >= 0.1), CAS thresholds 0.001:0.04 step 0.002 (strict >), OIC
inner - outer (0.25 per side, class score weight 0). Post-processing as the official
`getActLoc` / `NonMaximumSuppression` (shared conventions of `wtal.postprocess.proposals`):
each run is extended by one snippet at the end, that snippet inside the inner mean
(`end_extension=1`), the OIC outer bands as `getActLoc` computes them (`oic_bands="wtalc"`:
about ceil(0.25 L) snippets before, floor(0.25 L) after, never the video's last snippet), runs
shorter than 2 snippets are dropped (`min_run_length=2`), NMS 0.5 per
video and class by the intersection over the lower-scored segment's length with one snippet
added (`nms_overlap="over_lower"`), no cap on detections. Padded snippets are masked out of EM,
the random walk (zero affinity), every pooling and every loss.

Deliberate difference from the official code, model selection: the official code tests on the
test set every 5 epochs and its README picks the best of those checkpoints; wtal scores the
last epoch (or a validation split of the training videos), so expect the last epoch to land
somewhat below the paper's table.

To compare with the paper's THUMOS14 table, evaluate on the W-TALC protocol with the Ambiguous
segments filtered, as the official evaluation does, and keep every test video:
`wtal evaluate --protocol wtalc --ambiguous Ambiguous_test.txt` (no `--exclude-thumos14`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SettingsError
from ..postprocess.proposals import POSTPROCESS_DEFAULTS
from .base import Inference, Localizer, masked_mean, register, topk_count, topk_mean, video_label_loss


def _unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension (zero vectors stay zero)."""
    return x / (x.norm(dim=-1, keepdim=True) + 1e-9)


def _time_normalise(z: torch.Tensor) -> torch.Tensor:
    """Norm1 of (B, T, K) assignments: each basis' weights sum to 1 over time."""
    return z / (z.sum(1, keepdim=True) + 1e-9)


def random_walk(features: torch.Tensor, bases: torch.Tensor, mask: torch.Tensor, walk_weight: float,
                temperature: float, base_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Closed-form bipartite random walk between snippets (B, T, E) and bases (B, K, E).

    F* = (1 - w)(I - w^2 Z N^T)^-1 (w Z mu + F) with Z = softmax_K(temperature * cos) (zero on
    padded snippets and invalid bases) and N = Norm1(Z); by Woodbury,
    (I - w^2 Z N^T)^-1 B = B + w^2 Z (I_K - w^2 N^T Z)^-1 N^T B. Padded rows come back zero.
    """
    m = mask.unsqueeze(-1).to(features.dtype)
    logits = temperature * _unit(features) @ _unit(bases).transpose(1, 2)  # (B, T, K)
    if base_mask is not None:
        logits = logits.masked_fill(~base_mask.unsqueeze(1), torch.finfo(logits.dtype).min)
        z = torch.softmax(logits, -1) * base_mask.unsqueeze(1).to(logits.dtype)
    else:
        z = torch.softmax(logits, -1)
    z = z * m
    n = _time_normalise(z)
    w = walk_weight
    rhs = w * z @ bases + features  # (B, T, E)
    eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
    small = torch.linalg.solve(eye - (w ** 2) * n.transpose(1, 2) @ z, n.transpose(1, 2) @ rhs)  # (B, K, E)
    return (1.0 - w) * (rhs + (w ** 2) * z @ small) * m


@register
class RSKP(Localizer):
    """FAC-Net-style head on original, intra-video and inter-video propagated features."""

    name = "rskp"
    bank: torch.Tensor  # buffers (register_buffer in __init__)
    bank_scores: torch.Tensor
    bank_filled: torch.Tensor
    paper = "Representative snippet knowledge propagation (Huang et al., CVPR 2022)"
    setting_help = {"embed_dim": "embedding width (none: the feature width)", "scale": "cosine classifier scale",
                    "num_bases": "EM attention bases", "em_iters": "EM iterations", "em_temperature": "EM softmax temperature",
                    "walk_weight": "random-walk weight w", "bank_size": "memory-bank representatives per class",
                    "warmup": "epochs before the memory bank is used", "mil_weight": "weight of the MIL head loss",
                    "memory_cls_weight": "weight of the memory-propagated classification loss",
                    "memory_mix": "share of the memory-propagated features", "kd_weight": "weight of L_kd",
                    "kd_temperature": "temperature of the soft pseudo labels", "att_weight": "weight of L_att",
                    "fusion_weight": "main-branch weight of the test fusion"}
    # the public code trains on whole videos (no sampling): max_len only guards memory
    train_defaults = {"lr": 5e-5, "weight_decay": 5e-4, "batch_size": 10, "epochs": 200, "max_len": 100000,
                      "train_sampling": "segments", "lr_decay_epochs": (), "lr_decay_factor": 0.1}
    test_defaults = {
        "class_threshold": 0.1,
        "cas_thresholds": (0.001, 0.04, 0.002),
        "oic_outer_ratio": 0.25,
        "oic_class_weight": 0.0,
        "nms_threshold": 0.5,
        "test_sampling": "native",
        "test_len": 750,
        **POSTPROCESS_DEFAULTS,
        # the official getActLoc / NonMaximumSuppression (module docstring, "Post-processing")
        "end_extension": 1,
        "min_run_length": 2,
        "oic_bands": "wtalc",
        "nms_overlap": "over_lower",
    }
    BATCH_LOSSES = ("sum", "mean")
    BASES_INITS = ("xavier", "orthogonal")

    def __init__(self, feature_dim: int, num_classes: int, embed_dim: int | None = None, dropout: float = 0.6,
                 scale: float = 20.0, num_bases: int = 8, em_iters: int = 2, em_temperature: float = 5.0,
                 walk_weight: float = 0.5, bank_size: int = 5, warmup: int = 100, mil_weight: float = 0.2,
                 memory_cls_weight: float = 0.5, memory_mix: float = 0.2, kd_weight: float = 1.0,
                 kd_weight_memory: float = 0.5, kd_temperature: float = 0.2, att_weight: float = 0.1,
                 topk_fraction: float = 0.125, fusion_weight: float = 0.6, batch_loss: str = "sum",
                 bases_init: str = "xavier"):
        super().__init__(feature_dim, num_classes)
        if batch_loss not in self.BATCH_LOSSES:
            raise SettingsError(f"rskp: batch_loss={batch_loss!r}: choose one of {', '.join(self.BATCH_LOSSES)}")
        if bases_init not in self.BASES_INITS:
            raise SettingsError(f"rskp: bases_init={bases_init!r}: choose one of {', '.join(self.BASES_INITS)}")
        self._fill_items: list | None = None
        dim = embed_dim or feature_dim
        linear = nn.Linear(feature_dim, dim)
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)
        self.embedding = nn.Sequential(linear, nn.ReLU(), nn.Dropout(dropout))
        init = nn.init.xavier_uniform_ if bases_init == "xavier" else nn.init.orthogonal_
        self.bases = nn.Parameter(init(torch.empty(num_bases, dim)))
        self.centres = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_classes + 1, dim)))
        self.foreground = nn.Parameter(-self.centres.detach()[-1:].clone())
        self.register_buffer("bank", torch.zeros(num_classes, bank_size, dim))
        self.register_buffer("bank_scores", torch.zeros(num_classes, bank_size))
        self.register_buffer("bank_filled", torch.tensor(False))

    # ------------------------------------------------------------------ pieces
    def em(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Video-specific representatives (B, K, E) by EM attention from the learned bases."""
        xn = _unit(x)
        m = mask.unsqueeze(-1).to(x.dtype)
        mu = self.bases.unsqueeze(0).expand(x.shape[0], -1, -1)
        for _ in range(self.em_iters):
            z = torch.softmax(self.em_temperature * xn @ _unit(mu).transpose(1, 2), -1) * m
            mu = _time_normalise(z).transpose(1, 2) @ x
        return mu

    def head(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scaled cosine head: frame logits (B, T, C+1), attention (B, T), CA and MIL probabilities (B, C+1)."""
        m = mask.to(x.dtype)
        xn, cn = _unit(x), _unit(self.centres)
        frame = self.scale * xn @ cn.t()
        att = torch.sigmoid(self.scale * (xn @ _unit(self.foreground).t()).squeeze(-1)) * m
        cw_att = torch.sigmoid(frame) * m.unsqueeze(-1)
        ca_feat = (att.unsqueeze(-1) * x).sum(1) / (att.sum(1, keepdim=True) + 1e-5)
        cw_feat = cw_att.transpose(1, 2) @ x / (cw_att.sum(1).unsqueeze(-1) + 1e-5)  # (B, C+1, E)
        ca = torch.softmax(self.scale * _unit(ca_feat) @ cn.t(), -1)
        mil = torch.softmax(self.scale * (_unit(cw_feat) * cn).sum(-1), -1)
        return {"frame_logits": frame, "attention": att, "ca_probs": ca, "mil_probs": mil}

    def memory_bases(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bank representatives of each video's labelled classes, padded: (B, Kmax, E) and valid mask."""
        rows, valid = [], []
        for lab in labels:
            idx = torch.nonzero(lab > 0).flatten()
            rows.append(self.bank[idx].reshape(-1, self.bank.shape[-1]))
            valid.append((self.bank_scores[idx] > 0).flatten())
        k = max(1, max(len(r) for r in rows))
        bases = self.bank.new_zeros(len(rows), k, self.bank.shape[-1])
        base_mask = torch.zeros(len(rows), k, dtype=torch.bool, device=labels.device)
        for b, (r, v) in enumerate(zip(rows, valid)):
            bases[b, : len(r)], base_mask[b, : len(v)] = r, v
        return bases, base_mask

    @torch.no_grad()
    def update_bank(self, bases: torch.Tensor, base_scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep, per labelled class, the `bank_size` best of the bank and each video's representatives."""
        for mu, scores, lab in zip(bases, base_scores, labels):
            for c in torch.nonzero(lab > 0).flatten().tolist():
                all_scores = torch.cat([self.bank_scores[c], scores[:, c]])
                order = torch.sort(all_scores, descending=True, stable=True).indices[: self.bank_size]
                self.bank[c] = torch.cat([self.bank[c], mu])[order]
                self.bank_scores[c] = all_scores[order]

    def memory_active(self, epoch: int) -> bool:
        """The inter-video branch runs from epoch index warmup + 1, once the bank has been filled."""
        return epoch > self.warmup and bool(self.bank_filled)

    # ------------------------------------------------------------------ model
    def forward(self, features, mask=None, memory: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Named outputs of branches o (original), m (intra-video) and, given `memory`
        (bases, base mask), r (inter-video); plus `bases` (B, K, E) and their class `base_scores`."""
        if mask is None:
            mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        x = self.embedding(features) * mask.unsqueeze(-1).to(features.dtype)
        mu = self.em(x, mask)
        out = {"embedded": x, "bases": mu,
               "base_scores": torch.softmax(self.scale * _unit(mu) @ _unit(self.centres).t(), -1)}
        branches = {"o": x, "m": random_walk(x, mu, mask, self.walk_weight, self.em_temperature)}
        if memory is not None:
            branches["r"] = random_walk(x, memory[0], mask, self.walk_weight, self.em_temperature, memory[1])
        for prefix, feats in branches.items():
            out.update({f"{prefix}_{k}": v for k, v in self.head(feats, mask).items()})
        return out

    def _losses_and_outputs(self, batch, epoch):
        """Loss terms, forward outputs and whether the inter-video (memory) branch ran."""
        feats, mask, labels = batch["features"], batch["mask"], batch["labels"]
        memory = self.memory_bases(labels) if self.memory_active(epoch) else None
        out = self(feats, mask, memory)
        zero, one = labels.new_zeros(len(labels), 1), labels.new_ones(len(labels), 1)
        fg, bg = torch.cat([labels, zero], -1), torch.cat([labels, one], -1)
        cls_ca = video_label_loss(out["o_ca_probs"], fg, probs=True) + video_label_loss(out["m_ca_probs"], fg, probs=True)
        cls_mil = video_label_loss(out["o_mil_probs"], bg, probs=True) + video_label_loss(out["m_mil_probs"], bg, probs=True)
        teacher = out["m_frame_logits"]
        if memory is not None:
            has = memory[1].any(1)
            if has.any():
                # per-video mean over the whole batch (videos without bank entries add 0)
                share = self.memory_cls_weight * has.sum() / len(has)
                cls_ca = cls_ca + share * video_label_loss(out["r_ca_probs"][has], fg[has], probs=True)
                cls_mil = cls_mil + share * video_label_loss(out["r_mil_probs"][has], bg[has], probs=True)
            mixed = (1 - self.memory_mix) * teacher + self.memory_mix * out["r_frame_logits"]
            teacher = torch.where(has.view(-1, 1, 1), mixed, teacher)
        cls = cls_ca + self.mil_weight * cls_mil
        target = torch.softmax(teacher.detach() / self.kd_temperature, -1)
        kd_snippet = -(target * F.log_softmax(out["o_frame_logits"] / self.kd_temperature, -1)).sum(-1)
        kd = masked_mean(kd_snippet, mask).mean()
        k = topk_count(mask, feats.shape[1], self.topk_fraction, len(feats), feats.device)
        att = out["o_attention"].unsqueeze(-1)
        att_loss = (-topk_mean(-att, k, mask) - topk_mean(att, k, mask)).mean()
        kd_weight = self.kd_weight if memory is None else self.kd_weight_memory
        total = cls + kd_weight * kd + self.att_weight * att_loss
        losses = {"total": total, "cls": cls, "cls_ca": cls_ca, "cls_mil": cls_mil, "kd": kd, "att": att_loss}
        return losses, out, memory is not None

    def compute_losses(self, batch, epoch):
        """L_cls (CA + 0.2 MIL over the branches), L_kd, L_att and their weighted total, each the
        mean over the batch's videos."""
        return self._losses_and_outputs(batch, epoch)[0]

    def make_optimizers(self, cfg):
        """Adam with the public code's betas (0.9, 0.99)."""
        return {"main": torch.optim.Adam(self.parameters(), lr=cfg["lr"], betas=(0.9, 0.99),
                                         weight_decay=cfg["weight_decay"])}

    def fit_step(self, batch, optimizers, epoch):
        """One Adam step over the batch's videos as the official `processor.py` takes it: each
        video forward and backward alone at its own length (no compute on padding), gradients
        summed (`batch_loss="sum"`) or averaged; after the warm-up each video's representatives
        enter the bank right after its backward pass, so the step's later videos see them."""
        opt = optimizers["main"]
        opt.zero_grad(set_to_none=True)
        videos = len(batch["labels"])
        weight = 1.0 if self.batch_loss == "sum" else 1.0 / videos
        sums: dict[str, float] = {}
        for b in range(videos):
            keep = batch["mask"][b]
            single = {"features": batch["features"][b, keep][None], "mask": keep[keep][None],
                      "labels": batch["labels"][b:b + 1]}
            losses, out, used_memory = self._losses_and_outputs(single, epoch)
            (losses["total"] * weight).backward()
            if used_memory:
                self.update_bank(out["bases"].detach(), out["base_scores"].detach(), single["labels"])
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / videos
        opt.step()
        return sums

    def on_train_begin(self, items) -> None:
        """Keep the training videos: the bank is filled from their full-length features."""
        self._fill_items = list(items)

    @torch.no_grad()
    def on_epoch_end(self, epoch, batches):
        """Fill the memory bank (eval mode) at the end of epoch index `warmup`: from the training
        videos given to `on_train_begin`, one whole video at a time whatever `max_len` sampled
        (as the official `ft_eval`), else from the epoch's batches."""
        if bool(self.bank_filled) or epoch < self.warmup:
            return
        was_training = self.training
        self.eval()
        device = self.bank.device
        source = batches()
        if self._fill_items is not None:
            source = ({"features": torch.as_tensor(np.asarray(it.features, dtype=np.float32), device=device)[None],
                       "mask": torch.ones(1, len(it.features), dtype=torch.bool, device=device),
                       "labels": torch.as_tensor(np.asarray(it.labels, dtype=np.float32), device=device)[None]}
                      for it in self._fill_items)
        for batch in source:
            out = self(batch["features"], batch["mask"])
            self.update_bank(out["bases"], out["base_scores"], batch["labels"])
        self.bank_filled.fill_(True)
        self._fill_items = None
        self.train(was_training)

    @torch.no_grad()
    def infer(self, features):
        """Main and intra-video branches fused 0.6 / 0.4; CAS weighted by the main attention."""
        self.eval()
        out = self(features.unsqueeze(0))
        w, C = self.fusion_weight, self.num_classes
        video = w * out["o_ca_probs"][0] + (1 - w) * out["m_ca_probs"][0]
        frame = w * torch.softmax(out["o_frame_logits"][0], -1) + (1 - w) * torch.softmax(out["m_frame_logits"][0], -1)
        cas = frame * out["o_attention"][0].unsqueeze(-1)
        return Inference(
            cas=cas[:, :C].float().cpu().numpy().astype(np.float32),
            video_scores=video[:C].float().cpu().numpy(),
            extras={"attention": out["o_attention"][0].float().cpu().numpy(),
                    "background_score": video[C:].float().cpu().numpy()},
        )
