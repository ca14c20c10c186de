"""The only place boto3 appears. Clients come from cached factories called inside functions."""
