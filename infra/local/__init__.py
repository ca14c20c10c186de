"""The local runtime: the template's stack on one machine, no AWS account, no Docker.

moto server (``moto_server``), Lambda-like function workers (``functions``,
``worker``), the event router (``router``), a Lambda Invoke API
(``lambda_api``) and the stack that wires them from ``template.yaml``
(``stack``). See docs/local.md.
"""
