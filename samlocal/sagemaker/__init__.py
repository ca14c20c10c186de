"""A local SageMaker: the real SageMaker API, really running jobs and endpoints.

boto3 reaches it through the standard endpoint variables, unchanged code:

    AWS_ENDPOINT_URL_SAGEMAKER=<url>  AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=<url>

Start it in-process::

    from samlocal.sagemaker import LocalSageMaker

    sm = LocalSageMaker(
        data_dir=".flywheel/sagemaker",      # all state; reuse it to survive restarts
        host="127.0.0.1", port=0,            # 0 = any free port; see sm.url after start()
        s3_endpoint="http://127.0.0.1:5000", # moto server (default: AWS_ENDPOINT_URL_S3)
        events_endpoint="http://127.0.0.1:5000",  # put_events target (default:
                                             # AWS_ENDPOINT_URL_EVENTS; none = callback only)
        on_event=callback,                   # optional: called with each full EventBridge
                                             # event dict ("detail-type", "source", "detail", ...)
        cloudwatch_endpoint=None,            # rollback alarms
                                             # (default: AWS_ENDPOINT_URL_CLOUDWATCH)
    )
    sm.start()          # serves on a background thread; resumes jobs and endpoints
    print(sm.url)       # http://127.0.0.1:<port>, for both sagemaker and sagemaker-runtime
    sm.stop()           # stops serving; running jobs stay InProgress for the next start()

or as a process::

    python -m samlocal.sagemaker --data-dir .flywheel/sagemaker --port 0 \
        --s3-endpoint http://127.0.0.1:5000 --events-endpoint http://127.0.0.1:5000

Other keyword-only knobs: region, account (default 123456789012, moto's),
stop_grace_seconds (SIGTERM -> SIGKILL, default 10), bake_seconds (cap on a
blue/green bake, default 5), health_timeout_seconds, invoke_timeout_seconds,
max_parallel_trials (cap on a tuning job's MaxParallelTrainingJobs, default 2).

Operations: Create/Describe/List/StopTrainingJob; Create/Describe/List/Stop
HyperParameterTuningJob and ListTrainingJobsForHyperParameterTuningJob;
Create/Describe/Delete/List Model, EndpointConfig, Endpoint; UpdateEndpoint;
model package groups and packages (Create/Describe/List/Update/Delete);
AddTags/ListTags/DeleteTags; runtime InvokeEndpoint.

Test hook: a model whose container Environment has LOCAL_SAGEMAKER_ROLLBACK=1
makes an UpdateEndpoint to it roll back (as if a rollback alarm fired): the
endpoint stays InService on the old config, with a FailureReason. Real
CloudWatch alarms named in AutoRollbackConfiguration work too (read from moto).

Local helpers: GET <url>/_local/logs/<training job> (the job's log),
GET <url>/_local/endpoint-logs/<endpoint> (its model servers' logs),
GET <url>/_local/health.

Events ("SageMaker Training Job State Change", "SageMaker HyperParameter Tuning
Job State Change", "SageMaker Endpoint State Change", source aws.sagemaker,
detail = the Describe* shape with epoch-millisecond times) go to on_event and
to EventBridge's put_events.

What is and isn't faithful to SageMaker: docs/local-sagemaker.md.
"""

from .service import LocalSageMaker

__all__ = ["LocalSageMaker"]
