"""Self-supervised contrastive pretraining of a backbone on unlabeled ultrasound video frames.

Why: ImageNet weights are often out of reach (offline hospital networks) and
natural images are far from ultrasound, while hospitals hold far more
unlabeled video than labeled cases (USCL, Chen et al. MICCAI 2021; IVPP 2024).

* :mod:`.frames`: which videos (training split of a cohort, ``--unlabeled``
  folders), frames (each video decoded once, streamed; at most
  ``frames_per_video`` frames spread evenly in time, grey, whole frame squared
  and resized to ``size``, held in memory as uint8) and the partner windows of
  the intra-video positive pairs.
* :mod:`.augment`: ultrasound-appropriate augmentation of the views.
* :mod:`.losses`: projection head, NT-Xent (SimCLR) and MoCo v2 (momentum
  encoder and queue: many negatives with the small batches a CPU affords;
  symmetric loss, shuffled-BN emulated by running the key encoder on batch chunks).
* :mod:`.config`: :class:`PretrainConfig`; :mod:`.loop`: :func:`pretrain`
  (checkpoints, resume, weights and sidecar); :mod:`.probes`: linear and k-NN probes.

* :mod:`.provenance`: which videos (path, sha256, perceptual hash, source) the weights
  saw, a given cohort's test-split videos left out (also under ``--unlabeled``; matched
  by path, bytes, or decoded content: a re-encoded copy is the same video) unless
  ``include_test_videos``, and :func:`check_pretrain_weights`, which ``train``/``study``
  call to refuse weights pretrained on their test cases.

Labels: pretraining never reads the label column (the manifest is read with
only ``case_id``, ``image``, ``video`` and ``split``); of the test split's videos only
a few frames are decoded, for their perceptual hash (:func:`perceptual_hash`). Labels are read only by :func:`probe`, after pretraining,
on the training split.
"""

from ceusfusion.models.pretrain.augment import UltrasoundAugment
from ceusfusion.models.pretrain.config import METHODS, PretrainConfig
from ceusfusion.models.pretrain.frames import (
                                               FrameBank,
                                               build_bank,
                                               draw_partners,
                                               extract_frames,
                                               folder_videos,
                                               manifest_videos,
                                               partner_windows,
)
from ceusfusion.models.pretrain.loop import checkpoint_path, ckpt_dir, pretrain, probe_path
from ceusfusion.models.pretrain.losses import ContrastiveNet, MoCoState, moco_loss, nt_xent
from ceusfusion.models.pretrain.probes import grouped_probe_auc, load_pretrained_encoder, probe, probe_labels, video_features
from ceusfusion.models.pretrain.provenance import (
                                                   NO_RECORD,
                                                   CohortFiles,
                                                   Overlap,
                                                   VideoPlan,
                                                   check_pretrain_weights,
                                                   cohort_files,
                                                   collect_videos,
                                                   content_hash,
                                                   given_plan,
                                                   overlap_facts,
                                                   perceptual_hash,
                                                   plan_videos,
                                                   pretrain_overlap,
                                                   provenance_record,
                                                   read_provenance,
                                                   sidecar_path,
)

__all__ = [
    "METHODS", "PretrainConfig",
    "collect_videos", "manifest_videos", "folder_videos", "extract_frames", "FrameBank", "build_bank",
    "partner_windows", "draw_partners",
    "UltrasoundAugment",
    "ContrastiveNet", "MoCoState", "nt_xent", "moco_loss",
    "pretrain", "ckpt_dir", "checkpoint_path", "sidecar_path", "probe_path",
    "probe", "probe_labels", "grouped_probe_auc", "video_features", "load_pretrained_encoder",
    "VideoPlan", "plan_videos", "given_plan", "provenance_record", "CohortFiles", "cohort_files", "content_hash",
    "Overlap", "pretrain_overlap", "check_pretrain_weights", "read_provenance", "NO_RECORD", "perceptual_hash",
    "overlap_facts",
]
