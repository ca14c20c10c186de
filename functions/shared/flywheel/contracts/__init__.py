"""Contracts shared by the functions and the training job: one home each.

images        the image limits and header checks of ingest and the inference endpoint
metrics       metrics.json (metrics_schema.json): train.py validates it before writing,
              promote's gate reads it (InvalidArtifact naming the broken field)
model_config  model_config.json + ood.json (model_config_schema.json): save_artifact
              validates before writing, read_artifact (so inference.py's model_fn) on reading
manifest      Ground Truth augmented manifest lines: built by the dataset snapshot, the
              review batch and ``flywheel export``; read by labels files and train.py channels
schema        checks a document against those schema files (fastjsonschema, compiled once)

The standard library and fastjsonschema only. ``flywheel.packaging.package_source_dir`` adds
this package to the training ``sourcedir.tar.gz`` and ``classifier.artifact.save_artifact``
to the model's ``code/``, so the training job and ``inference.py`` import these very modules.
"""
