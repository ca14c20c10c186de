"""dataflywheel's shared Lambda package (the SharedLayer).

domain/    pure logic: no boto3, no Powertools
adapters/  the only modules that import boto3 (cached client factories)
settings   one pydantic model per function; field names are env var names
errors     the small error hierarchy handlers raise
packaging  deterministic sourcedir.tar.gz (start_training)
"""
