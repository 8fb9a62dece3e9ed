"""Nodule segmentation learned from the cohort's own masks: ``segment train`` and ``segment predict``.

A U-Net from segmentation_models_pytorch on a timm encoder whose ImageNet weights come through
``models.resolver`` (``net``); patient-grouped cross-validation on the training split's masks only
(``train``); box-prompted and automatic inference with flip TTA over the fold models (``infer``);
masks written as NIfTI in the source's geometry and a copy of the manifest that points at them
(``predict``). ``ingest`` reads the masks as files and never imports this package.
"""
