"""dataflywheel: the operator tools of the flywheel (the ``flywheel`` command).

cli            the ``flywheel`` command: up, status, upload, predict, review, export, train, ...
stack_ref      reach a stack (local or deployed) through CloudFormation DescribeStacks
stack_client   ``StackClient``: the stack's resources by logical id, with the user's credentials
progress       ``train --wait`` / ``flywheel wait`` output (trials, epochs, the promotion)
demo report    ``flywheel demo`` and its report
review_app     configures, uploads and presigns the review page
image_uris sam_sizes  deploy-time helpers (training/inference image URIs, package sizes)

The code that runs in AWS is elsewhere: ``functions/`` (the Lambda handlers over the
``flywheel`` package of the SharedLayer) and ``training_jobs/`` (the SageMaker source_dir).
The local runtime they start is ``samlocal``.
"""
