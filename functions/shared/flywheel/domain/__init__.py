"""Pure domain logic: data in, data out. Never import boto3 or aws_lambda_powertools here."""
