"""Plain top-k multiple-instance-learning baseline (W-TALC's MIL loss without co-activity).

A temporal conv head predicts a class activation sequence; the mean of the k = T//8 highest
activations per class is the video logit, trained with cross-entropy against normalised
video labels. It is the reference point the five published methods are compared with.
"""
from __future__ import annotations

import numpy as np
import torch

from ..postprocess.proposals import POSTPROCESS_DEFAULTS, minmax_normalise
from .base import Inference, Localizer, TemporalConvHead, register, topk_count, topk_mean, video_label_loss


@register
class MIL(Localizer):
    name = "mil"
    paper = "top-k multiple-instance-learning baseline (W-TALC's MIL loss)"
    train_defaults = {"lr": 1e-4, "weight_decay": 5e-4, "batch_size": 16, "epochs": 100, "max_len": 750,
                      "train_sampling": "segments", "lr_decay_epochs": (), "lr_decay_factor": 0.1}
    test_defaults = {
        "class_threshold": 0.2,
        "cas_thresholds": (0.1, 0.9, 0.1),
        "oic_outer_ratio": 0.25,
        "oic_class_weight": 0.2,
        "nms_threshold": 0.5,
        "test_sampling": "native",
        "test_len": 750,
        **POSTPROCESS_DEFAULTS,
    }

    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 512, dropout: float = 0.5,
                 topk_fraction: float = 0.125):
        super().__init__(feature_dim, num_classes)
        self.head = TemporalConvHead(feature_dim, hidden, num_classes, layers=1, dropout=dropout)

    def forward(self, features, mask=None):
        if mask is not None:  # padded snippets must not reach the temporal convolution
            features = features * mask.unsqueeze(-1).to(features.dtype)
        cas = self.head(features)
        k = topk_count(mask, features.shape[1], self.topk_fraction, features.shape[0], features.device)
        return {"cas": cas, "video_logits": topk_mean(cas, k, mask)}

    def compute_losses(self, batch, epoch):
        out = self(batch["features"], batch["mask"])
        cls = video_label_loss(out["video_logits"], batch["labels"])
        return {"total": cls, "cls": cls}

    @torch.no_grad()
    def infer(self, features):
        self.eval()
        out = self(features.unsqueeze(0))
        scores = torch.softmax(out["video_logits"][0], -1).cpu().numpy()
        cas = minmax_normalise(out["cas"][0].float().cpu().numpy(), axis=0)
        return Inference(cas=cas.astype(np.float32), video_scores=scores)
