"""Contracts shared by the functions and the training job: one home each.

images  the image limits and header checks of ingest and the inference endpoint

Standard library only. ``flywheel.packaging.package_source_dir`` adds this package to the
training ``sourcedir.tar.gz`` and ``classifier.artifact.save_artifact`` to the model's
``code/``, so the training job and ``inference.py`` import these very modules.
"""
