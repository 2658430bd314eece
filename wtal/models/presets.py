"""Dataset presets: every value a method's paper or official configuration gives per dataset.

`wtal train --preset thumos14|activitynet12|activitynet13` applies them before `--set`
overrides; `wtal models NAME --preset P` prints them. Each value cites the paper section or the
official file it comes from. A setting that one dataset's sources give but another's do not is
"not published" there and keeps its THUMOS14 value (wtal's default). `thumos14`, the default,
equals wtal's defaults: it only documents where they come from. Where a paper and its official
configuration disagree, the configuration that produced the published numbers wins and the
citation names both. `tiou` is the tIoU list the paper evaluates at (for `wtal evaluate --tiou`).

Official repositories are cited as owner/repo path; paper sections as `../shared/papers/*.txt`.
"""
from __future__ import annotations

from typing import Any

from ..errors import SettingsError

PRESET_NAMES = ("thumos14", "activitynet12", "activitynet13")
DEFAULT_PRESET = "thumos14"
NOT_PUBLISHED = "not published"
THUMOS_TIOU, ANET_TIOU = "0.1:0.7:0.1", "0.5:0.95:0.05"

_ECM = "VividLe/Equivalent-Classification-Mapping"
_ECM_P = "ECM paper §4.1"
_ECM12, _ECM13 = f"{_ECM} experiments/ActivityNet1.2.yaml", f"{_ECM} experiments/ActivityNet1.3.yaml"
_BT = "VividLe/BackTAL"
_BT_P = "BackTAL paper §4.1"
_BT12 = f"{_BT} experiments/ActivityNet1.2.yaml"
_BAS = "Pilhyeon/BaSNet-pytorch"
_RS = "LeonHLJ/RSKP"
_RS_P = "RSKP paper §4 Implementation details"
_RS_AN = f"{_RS} issue #3 (the author's ActivityNet1.3 configuration)"
_DG = "bfshi/DGAM-Weakly-Supervised-Action-Localization"
_CN_P = "CleanNet paper §4.1 Implementation details"

# {model: {preset: {setting: (value, source)}}}
PRESETS: dict[str, dict[str, dict[str, tuple[Any, str]]]] = {
    "ecm": {
        "thumos14": {
            "max_len": (750, f"{_ECM_P}: T = 750 for THUMOS14"),
            "test_len": (750, f"{_ECM_P}: T = 750 for THUMOS14"),
            "topk_fraction": (0.125, f"{_ECM_P}: k = 1/8; {_ECM} lib/models/network.py:52"),
            "lr": (2e-4, f"{_ECM_P}: 2e-4 for all experiments"),
            "weight_decay": (5e-4, f"{_ECM_P}: 5e-4 for all experiments"),
            "batch_size": (16, f"{_ECM_P}: batch 16"),
            "epochs": (150, f"{_ECM_P}: 150 epochs for THUMOS14"),
            "c2c_weight": (0.05, f"{_ECM_P}: alpha = 0.05"),
            "a2c_weight": (5.0, f"{_ECM_P}: beta = 5"),
            "class_threshold": (0.25, f"{_ECM_P}: tau = 0.25"),
            "cas_thresholds": ((0.01, 0.2, 0.025), f"{_ECM} lib/post_process/functions.py (reviews/ecm.md C)"),
            "oic_outer_ratio": (0.4, f"{_ECM} lib/post_process/functions.py (reviews/ecm.md C)"),
            "oic_class_weight": (0.15, f"{_ECM} lib/post_process/functions.py (reviews/ecm.md C)"),
            "nms_threshold": (0.6, f"{_ECM} lib/post_process/nms.py:24"),
            "train_sampling": ("interpolate", f"{_ECM_P}: each video evenly divided into T snippets; "
                               f"{_ECM} lib/dataset/dataset.py (fixed T = 750 features)"),
            "test_sampling": ("interpolate", f"{_ECM_P}; {_ECM} lib/dataset/dataset.py (T = 750 at test)"),
            "oic_signal": ("thresholded", f"{_ECM} lib/post_process/functions.py:150-157,84-94 (cas_temp)"),
            "cas_upsample": ("frames", f"{_ECM} lib/post_process/functions.py:142 (CAS resized to frame_num)"),
            "nms_overlap": ("tiou_plus_one", f"{_ECM} lib/post_process/nms.py:10,20,24 (+1 in seconds, suppress >=)"),
            "tiou": (THUMOS_TIOU, "ECM paper Table 3 (THUMOS14, mAP@0.1:0.7)"),
        },
        "activitynet12": {
            "max_len": (100, f"{_ECM_P}: T = 100 for ActivityNet v1.2; {_ECM12}"),
            "test_len": (100, f"{_ECM_P}: T = 100; {_ECM12}"),
            "topk_fraction": (0.25, f"{_ECM12} (k = 25 of 100)"),
            "lr": (2e-4, f"{_ECM_P}: 2e-4 for all experiments"),
            "weight_decay": (5e-4, f"{_ECM_P}: 5e-4 for all experiments"),
            "batch_size": (128, f"{_ECM12} (the paper's §4.1 says 16)"),
            "epochs": (36, f"{_ECM12} (the paper's §4.1 says 40)"),
            "c2c_weight": (0.05, f"{_ECM12}: alpha = 0.05"),
            "a2c_weight": (1.0, f"{_ECM12}: beta = 1 (the paper's §4.1 says 5)"),
            "class_threshold": (0.12, _ECM12),
            "cas_thresholds": ((0.0, 0.175, 0.025), _ECM12),
            "oic_outer_ratio": (0.5, f"{_ECM12}: OIC lambda 0.5"),
            "oic_class_weight": (0.45, f"{_ECM12}: gamma 0.45"),
            "nms_threshold": (0.7, _ECM12),
            "tiou": (ANET_TIOU, "ECM paper §4.1 Metric: average mAP at [0.50:0.05:0.95]"),
        },
        "activitynet13": {
            "max_len": (100, f"{_ECM_P}: T = 100 for ActivityNet v1.3; {_ECM13}"),
            "test_len": (100, f"{_ECM_P}: T = 100; {_ECM13}"),
            "topk_fraction": (0.6, f"{_ECM13} (k = 60 of 100)"),
            "lr": (2e-4, f"{_ECM_P}: 2e-4 for all experiments"),
            "lr_decay_epochs": ((26,), f"{_ECM13}: lr x 0.1 at epoch 26"),
            "lr_decay_factor": (0.1, f"{_ECM13}: lr x 0.1 at epoch 26"),
            "weight_decay": (5e-4, f"{_ECM_P}: 5e-4 for all experiments"),
            "batch_size": (128, f"{_ECM13} (the paper's §4.1 says 16)"),
            "epochs": (36, f"{_ECM13} (the paper's §4.1 says 40)"),
            "c2c_weight": (0.05, f"{_ECM13}: alpha = 0.05"),
            "a2c_weight": (1.0, f"{_ECM13}: beta = 1 (the paper's §4.1 says 5)"),
            "class_threshold": (0.05, _ECM13),
            "cas_thresholds": ((0.0, 0.175, 0.025), _ECM13),
            "oic_outer_ratio": (0.5, f"{_ECM13}: OIC lambda 0.5"),
            "oic_class_weight": (0.45, f"{_ECM13}: gamma 0.45"),
            "nms_threshold": (0.7, _ECM13),
            "tiou": (ANET_TIOU, "ECM paper §4.1 Metric: average mAP at [0.50:0.05:0.95]"),
        },
    },
    "backtal": {
        "thumos14": {
            "max_len": (750, f"{_BT_P}: T = 750 for THUMOS14"),
            "test_len": (750, f"{_BT_P}: T = 750 for THUMOS14"),
            "topk_fraction": (0.125, f"{_BT} experiments/THUMOS14.yaml:28,32 (k = 93 of 750)"),
            "lr": (1e-4, f"{_BT_P}: learning rate 1e-4"),
            "weight_decay": (5e-4, f"{_BT_P}: weight decay 5e-4"),
            "batch_size": (16, f"{_BT_P}: batch size 16"),
            "epochs": (100, f"{_BT_P}: 100 epochs for THUMOS14 ({_BT} experiments/THUMOS14.yaml:43 runs 40)"),
            "separation_weight": (1.0, f"{_BT} lib/criterion/loss.py (C_LOSS_TOPK_BG 1)"),
            "class_threshold": (0.25, f"{_BT} lib/post_process/functions.py:162,214"),
            "cas_thresholds": ((0.0, 0.25, 0.025), f"{_BT} lib/post_process/functions.py (reviews/backtal.md §2)"),
            "oic_outer_ratio": (0.25, f"{_BT} lib/post_process/functions.py (reviews/backtal.md §2)"),
            "oic_class_weight": (0.2, f"{_BT} lib/post_process/functions.py (reviews/backtal.md §2)"),
            "nms_threshold": (0.55, f"{_BT} lib/post_process/functions.py (reviews/backtal.md §2)"),
            "train_sampling": ("interpolate", f"{_BT_P} Baseline Method: complete features linearly interpolated to "
                               f"a fixed length, instead of BaS-Net's random selection; {_BT} experiments/THUMOS14.yaml:28 "
                               "NUM_SEGMENTS 750"),
            "test_sampling": ("interpolate", f"{_BT_P}: features scaled to a fixed length by linear interpolation"),
            "oic_signal": ("thresholded", f"{_BT} lib/post_process/functions.py:178-184,116-124 (cas_temp)"),
            "cas_upsample": ("frames", f"{_BT} lib/post_process/functions.py:170 (CAS resized to frame_num)"),
            "class_score": ("weighted", f"{_BT} lib/post_process/functions.py:214-220 (score before binarising)"),
            "nms_overlap": ("tiou_plus_one", f"{_BT} lib/post_process/nms.py:10,20,24 (+1 in seconds, suppress >=)"),
            "magnitude_thresholds": ((0.3, 0.8, 0.075), f"{_BT} lib/post_process/functions.py:154-159,188-198 "
                                     "(feature-magnitude proposals, THUMOS14 only; not in the paper)"),
            "tiou": ("0.3:0.7:0.1", f"{_BT_P} Evaluation Metric: tIoU 0.3, 0.4, 0.5, 0.6, 0.7 on THUMOS14"),
        },
        "activitynet12": {
            "max_len": (100, f"{_BT_P}: T = 100 for ActivityNet v1.2"),
            "test_len": (100, f"{_BT_P}: T = 100 for ActivityNet v1.2"),
            "topk_fraction": (0.6, f"{_BT12}:26"),
            "lr": (2e-4, f"{_BT12} (the paper's §4.1 says 1e-4)"),
            "batch_size": (128, f"{_BT12} (the paper's §4.1 says 16)"),
            "epochs": (25, f"{_BT_P}: 25 epochs for ActivityNet v1.2; {_BT12}"),
            "separation_weight": (0.1, f"{_BT12} (C_LOSS_TOPK_BG 0.1)"),
            "class_threshold": (0.1, _BT12),
            "cas_thresholds": ((0.0, 0.15, 0.025), _BT12),
            "oic_outer_ratio": (20.0, _BT12),
            "oic_class_weight": (0.6, _BT12),
            "nms_threshold": (0.7, _BT12),
            "magnitude_thresholds": (None, f"{_BT} lib/post_process/functions.py:154,188 (magnitude proposals "
                                     "on THUMOS14 only)"),
            "tiou": (ANET_TIOU, f"{_BT_P} Evaluation Metric: [0.5:0.05:0.95]"),
        },
        "activitynet13": {},
    },
    "basnet": {
        "thumos14": {
            "max_len": (750, f"{_BAS} thumos_features.py:136-159 (750 in training and test)"),
            "test_len": (750, f"{_BAS} thumos_features.py:154-159"),
            "lr": (1e-4, f"{_BAS} config.py (reviews/backtal.md §2)"),
            "batch_size": (16, f"{_BAS} config.py (reviews/backtal.md §2)"),
            "epochs": (115, f"{_BAS} config.py:6-7: 1500 iterations = 115 epochs of 13 batches"),
            "class_threshold": (0.25, f"{_BAS} test.py (reviews/backtal.md §2)"),
            "cas_thresholds": ((0.0, 0.25, 0.025), f"{_BAS} test.py (reviews/backtal.md §2)"),
            "oic_outer_ratio": (0.25, f"{_BAS} utils.py:28-39"),
            "oic_class_weight": (0.2, f"{_BAS} utils.py:28-39"),
            "nms_threshold": (0.7, f"{_BAS} utils.py:92-106"),
            "train_sampling": ("perturb", f"{_BAS} thumos_features.py:136-151 (random perturbed, repeats short videos)"),
            "test_sampling": ("interpolate", f"issue 13 (the paper's linear interpolation; {_BAS} "
                              "thumos_features.py:154-159 takes floor-uniform snippets)"),
            "oic_signal": ("thresholded", f"{_BAS} test.py:61-71, utils.py:28-39 (wtcam = cas_temp)"),
            "cas_upsample": ("24", f"{_BAS} test.py:56, utils.py:11-16 (linear x24)"),
            "class_score": ("constant", f"{_BAS} test.py:39-40,71 (score_np binarised in place: +0.2 each)"),
            "nms_overlap": ("tiou_plus_one", f"{_BAS} utils.py:92,102-106 (+1 in seconds, suppress >=)"),
        },
        "activitynet12": {},
        "activitynet13": {},
    },
    "rskp": {
        "thumos14": {
            "lr": (5e-5, f"{_RS_P} (paper l.173): learning rate 5e-5"),
            "weight_decay": (5e-4, f"{_RS} options.py:35-39"),
            "batch_size": (10, f"{_RS_P} (paper l.173): mini-batch 10 for THUMOS14"),
            "epochs": (200, f"{_RS_P} (paper l.173): 200 epochs"),
            "warmup": (100, f"{_RS_P} (paper l.173): 100 warm-up epochs"),
            "dropout": (0.6, f"{_RS} options.py:37"),
            "scale": (20.0, f"{_RS} model/main_branch.py:76-108"),
            "mil_weight": (0.2, f"{_RS} options.py:46 (lambda_b)"),
            "att_weight": (0.1, f"{_RS_P} (paper l.173): beta = 0.1"),
            "kd_weight": (1.0, f"{_RS_P} (paper l.173): alpha = 1.0; {_RS} options.py (lambda_s)"),
            "kd_weight_memory": (0.5, f"{_RS} processor.py:182 (lambda_s = 0.5 once the memory is filled)"),
            "batch_loss": ("sum", f"{_RS} processor.py:160-175 (backward per video, step every 10, no division)"),
            "bases_init": ("xavier", f"{_RS} model/main_branch.py:50-51 (the paper: orthogonal)"),
            "num_bases": (8, f"{_RS} options.py:41 (mu_num); {_RS_P} (paper l.473)"),
            "em_iters": (2, f"{_RS} options.py:43 (em_iter); {_RS_P} (paper l.112)"),
            "fusion_weight": (0.6, f"{_RS} evaluation/eval.py:59-63"),
            "class_threshold": (0.1, f"{_RS_P} (paper l.175): reject below 0.1"),
            "cas_thresholds": ((0.001, 0.04, 0.002), f"{_RS} options.py:52-54"),
            "oic_class_weight": (0.0, f"{_RS} evaluation/detectionMAP.py:95-110 (no class-score term)"),
            "nms_threshold": (0.5, f"{_RS} evaluation/detectionMAP.py:111"),
            "nms_overlap": ("over_lower", f"{_RS} evaluation/detectionMAP.py:142-166 (overlap / lower-scored length)"),
            "end_extension": (1, f"{_RS} evaluation/detectionMAP.py:101,110 (runs stored as [s, e + 1))"),
            "min_run_length": (2, f"{_RS} evaluation/detectionMAP.py:100 (len_proposal >= 2)"),
            "oic_bands": ("wtalc", f"{_RS} evaluation/detectionMAP.py:102-108 (outer bands)"),
            "tiou": (THUMOS_TIOU, "RSKP paper Table 2 (THUMOS14, mAP@0.1:0.7)"),
        },
        "activitynet12": {},
        "activitynet13": {
            "batch_size": (16, f"{_RS_P} (paper l.173): mini-batch 16 for ActivityNet"),
            "lr": (2e-5, _RS_AN),
            "weight_decay": (1e-3, _RS_AN),
            "dropout": (0.7, _RS_AN),
            "scale": (10.0, _RS_AN),
            "mil_weight": (0.1, f"{_RS_AN}: lambda_b 0.1"),
            "att_weight": (0.1, f"{_RS_AN}: lambda_att 0.1"),
            "kd_weight": (1.0, f"{_RS_AN}: lambda_spl 1.0"),
            "num_bases": (8, f"{_RS_AN}: n_mu 8"),
            "em_iters": (2, f"{_RS_AN}: em_iter 2"),
            "fusion_weight": (0.8, f"{_RS_AN}: o_weight 0.8 / m_weight 0.2"),
            "tiou": (ANET_TIOU, "RSKP paper Table 1 (ActivityNet1.3, AVG over 0.5:0.05:0.95)"),
        },
    },
    "dgam": {
        "thumos14": {
            "lr": (1e-3, f"{_DG} lib/core/config.py (reviews/dgam.md §3)"),
            "weight_decay": (0.0, f"{_DG} lib/utils/utils.py:53-58 (Adam without weight decay)"),
            "adam_betas": ((0.8, 0.999), f"{_DG} lib/utils/utils.py:53-58"),
            "batch_size": (32, f"{_DG} lib/core/config.py (reviews/dgam.md §3)"),
            "epochs": (6000, f"{_DG} lib/core/config.py:114 (END_EPOCH)"),
            "max_len": (400, f"{_DG} lib/dataset/dataset.py (T = 400)"),
            "test_len": (400, f"DGAM paper §4.2; {_DG} lib/dataset/dataset.py:55 (T' = 400)"),
            "test_sampling": ("uniform", f"DGAM paper §4.2: T_max frames sampled uniformly; {_DG} lib/utils/utils.py:126-136"),
            "bg_weight": (0.03, "DGAM paper §4.2: alpha = 0.03"),
            "guide_weight": (0.1, "DGAM paper §4.2: gamma2 = 0.1"),
            "recon_weights": ((0.5, 0.3), "DGAM paper §4.2: gamma1 = 0.5 (rgb) / 0.3 (flow)"),
            "warmup_epochs": (300, "DGAM paper §4.2: warm-up in the first 300 epochs"),
            "class_threshold": (0.1, f"{_DG} lib/core/function.py:237-240"),
            "attention_thresholds": ((0.03, 0.08), f"{_DG} lib/core/config.py:139-143"),
            "frame_score_ratios": ((0.35, 0.65), f"{_DG} lib/core/config.py:139-143"),
            "cas_mix": (0.8, f"{_DG} lib/utils/utils.py:150-170"),
            "upsample_scale": (20, f"{_DG} lib/utils/utils.py:192-249"),
            "outer_weight": (0.3, f"{_DG} lib/utils/utils.py:192-249 (eta)"),
            "nms_threshold": (0.5, f"{_DG} lib/core/function.py:384-391"),
            "tiou": ("0.1:0.9:0.1", "DGAM paper Table 3 (THUMOS14, mAP@0.1:0.1:0.9)"),
        },
        "activitynet12": {
            "lr": (1e-3, f"{_DG} lib/core/config.py (reviews/dgam.md §5)"),
            "weight_decay": (0.0, f"{_DG} lib/utils/utils.py:53-58 (Adam without weight decay)"),
            "batch_size": (32, f"{_DG} lib/core/config.py (reviews/dgam.md §5)"),
            "max_len": (400, f"{_DG} lib/dataset/dataset.py:104-105"),
            "test_len": (200, f"{_DG} lib/dataset/dataset.py:107 (T' = 200)"),
            "bg_weight": (1.0, f"{_DG} lib/core/function.py:158-162"),
            "guide_weight": (0.1, f"{_DG} lib/core/function.py:158-162"),
            "recon_weights": ((0.1, 0.1), f"{_DG} lib/core/function.py:158-162"),
            "warmup_epochs": (0, f"{_DG} lib/core/function.py:158-162 (no warm-up of L_re)"),
            "fg_stream_weights": ((1.0, 0.3), f"{_DG} lib/core/function.py:162 (flow L_fg weight 0.3)"),
            "class_threshold": (0.1, f"{_DG} lib/core/config.py:139-143"),
            "attention_thresholds": ((0.01, 0.01), f"{_DG} lib/core/config.py:139-143"),
            "frame_score_ratios": ((0.5, 0.5), f"{_DG} lib/core/config.py:139-143"),
            "cas_mix": (0.8, f"{_DG} lib/utils/utils.py:200-202"),
            "upsample_scale": (20, f"{_DG} lib/core/config.py:139-143"),
            "outer_weight": (0.3, f"{_DG} lib/core/config.py:139-143"),
            "threshold_smoothing": (25.0, f"{_DG} lib/utils/utils.py:200-202 (gaussian_filter1d sigma 25)"),
            "nms_threshold": (0.5, f"{_DG} lib/core/config.py:139-143"),
            "tiou": (ANET_TIOU, "DGAM paper Table 5 (ActivityNet1.2, mAP@AVG over 0.5:0.05:0.95)"),
        },
        "activitynet13": {},
    },
    "cleannet": {
        "thumos14": {
            "anchors": ((1, 2, 4, 8, 16, 32), f"{_CN_P}: anchors 1-32 snippets for THUMOS14"),
            "lr_step_videos": (200, f"{_CN_P}: lr divided by 10 after every 200 batches"),
            "batch_size": (1, f"{_CN_P}: one batch contains one whole untrimmed video"),
            "class_threshold": (0.1, f"{_CN_P}: classification score higher than 0.1"),
            "nms_threshold": (0.4, f"{_CN_P}: NMS with IoU threshold 0.4"),
            "tiou": ("0.3:0.7:0.1", "CleanNet paper Table 3 (THUMOS14, mAP@0.3:0.7)"),
        },
        "activitynet12": {
            "anchors": ((16, 32, 64, 128, 256, 512), f"{_CN_P}: anchors 16-512 snippets for ActivityNet v1.2"),
            "lr_step_videos": (200, f"{_CN_P}: lr divided by 10 after every 200 batches"),
            "batch_size": (1, f"{_CN_P}: one batch contains one whole untrimmed video"),
            "class_threshold": (0.1, f"{_CN_P}: classification score higher than 0.1"),
            "nms_threshold": (0.4, f"{_CN_P}: NMS with IoU threshold 0.4"),
            "tiou": (ANET_TIOU, "CleanNet paper §4 (ActivityNet v1.2 standard evaluation, 0.5:0.05:0.95)"),
        },
        "activitynet13": {},
    },
    "mil": {"thumos14": {}, "activitynet12": {}, "activitynet13": {}},
}

# what each preset cannot express in wtal, printed under its table
NOTES: dict[tuple[str, str], list[str]] = {
    ("backtal", "activitynet12"): [
        f"{_BT12}: a separate top-k ratio 0.2 for the separation loss, proposals shrunk by 2% of their length at "
        "both ends and a whole-video proposal scored 0.6 are not expressible in wtal",
    ],
    ("dgam", "activitynet12"): [
        f"{_DG} epochs: END_EPOCH 6000 is nominal, the official code keeps the best evaluation every 10 epochs; "
        "its CVAE loss keeps the 10 x warm-up scale while L_re has none (warmup_epochs 0 here drops both ramps)",
    ],
    ("rskp", "activitynet13"): [
        f"{_RS} has no ActivityNet code; the author points to ACM-Net for the rest of the protocol",
        f"{_RS_AN} gives lambda_spl 1.0 only: whether it halves after the warm-up as on THUMOS14 "
        "(kd_weight_memory) is not published",
    ],
}


def _check(model: str, preset: str) -> dict[str, tuple[Any, str]]:
    if preset not in PRESET_NAMES:
        raise SettingsError(f"--preset {preset}: choose one of {', '.join(PRESET_NAMES)}")
    return PRESETS.get(model, {}).get(preset, {})


def preset_table(model: str, preset: str, defaults: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(setting, value, source) for every setting any preset of `model` names, plus `tiou`.

    `defaults` holds the model's default settings (the THUMOS14 fallback); an unpublished value
    shows as "not published (THUMOS14 value)".
    """
    given = _check(model, preset)
    keys = sorted({k for p in PRESETS.get(model, {}).values() for k in p} | {"tiou"})
    thumos = PRESETS.get(model, {}).get(DEFAULT_PRESET, {})
    fallback = {**defaults, "tiou": THUMOS_TIOU, **{k: v for k, (v, _) in thumos.items()}}
    rows = []
    for key in keys:
        if key in given:
            rows.append((key, given[key][0], given[key][1]))
        else:
            rows.append((key, fallback.get(key),
                         f"{NOT_PUBLISHED} (" + ("wtal default" if preset == DEFAULT_PRESET else "THUMOS14 value") + ")"))
    return rows


def preset_overrides(model: str, preset: str) -> dict[str, Any]:
    """The settings `preset` sets for `model` (typed values for `split_settings`), without `tiou`."""
    return {k: v for k, (v, _) in _check(model, preset).items() if k != "tiou"}


def preset_tiou(model: str, preset: str) -> str:
    """The tIoU list the paper evaluates `preset` at (THUMOS14's when not published)."""
    given = _check(model, preset)
    if "tiou" in given:
        return given["tiou"][0]
    return ANET_TIOU if preset.startswith("activitynet") else THUMOS_TIOU


def format_preset(model: str, preset: str, defaults: dict[str, Any]) -> list[str]:
    """Printable lines: one per setting (value and source), then what the preset cannot express."""
    rows = preset_table(model, preset, defaults)
    width = max(len(k) for k, _, _ in rows)
    lines = [f"{model} --preset {preset}"]
    lines += [f"  {k:{width}s}  {v!s:22s}  {source}" for k, v, source in rows]
    lines += [f"  note: {n}" for n in NOTES.get((model, preset), [])]
    return lines
