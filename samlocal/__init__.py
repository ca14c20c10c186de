"""samlocal: run a SAM template on one machine, with no AWS account and no Docker.

Generic: nothing here knows what the template's functions do. ``template.yaml`` drives it.

cfn            resolve a template (parameters, conditions, intrinsics) and provision it in moto
moto_server    moto in server mode behind a write-ahead journal (``journal``): acknowledged
               writes survive ``kill -9``; Step Functions executions (``moto_stepfunctions``)
functions      Lambda-like function workers (``worker``), one process pool per function
router         delivers the template's events (S3 → SQS, EventBridge patterns, schedules)
http_api       the template's HttpApi routes, with the Cognito JWT authorizer
lambda_api     a Lambda Invoke API (and the local extras under ``/_flywheel/``)
provision      creates the resources and registers the stack in moto's CloudFormation
stack          ``LocalStack``: wires all of the above from the template
sagemaker/     a local SageMaker: training and tuning jobs as processes, endpoints serving
               ``inference.py``, the model registry, state-change events

See samlocal/README.md, docs/local.md and docs/local-sagemaker.md. The operator tools that
use it (the ``flywheel`` CLI, the demo) live in ``dataflywheel``.
"""
