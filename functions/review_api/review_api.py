"""HttpApi (payload v2, Cognito JWT authorizer) -> the review app's JSON API.

    GET  /review/next?count=N   lease up to N items (default 5), most informative first
    POST /review/answers        {"item_id", "label"} | {"item_id", "action": "skip"|"reject"}
    POST /review/undo           revert the caller's last answer
    GET  /review/stats          the caller's progress, items by state, the retrain counter
    GET  /review/dashboard      the stack's figures (the same as `flywheel status`)

The caller is the token's ``cognito:username`` (ID token) or ``username`` (access token),
else its ``sub``. Errors map to status codes in one place (``client_error``).
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from flywheel.domain.answers import parse_answer, parse_count
from flywheel.errors import BadRequest, ClientError, http_status
from flywheel.services import dashboard, review_queue
from flywheel.settings import ReviewApiSettings

# Patch only botocore: patch_all imports every supported library (~0.6 s of cold start).
logger, tracer, metrics = Logger(), Tracer(patch_modules=["botocore"]), Metrics()
app = APIGatewayHttpResolver()


class Unauthorized(ClientError):
    status = 401


def reviewer() -> str:
    claims = app.current_event.request_context.authorizer.jwt_claim or {}
    who = claims.get("cognito:username") or claims.get("username") or claims.get("sub")
    if not who:  # only reachable without the authorizer in front
        raise Unauthorized("no authenticated caller", "unauthorized")
    return str(who)


@app.get("/review/next")
def next_items() -> dict:
    count = parse_count(app.current_event.get_query_string_value("count"))
    return review_queue.next_items(ReviewApiSettings.from_env(), reviewer(), count)


@app.post("/review/answers")
def answers() -> dict:
    try:
        body = app.current_event.json_body
    except (ValueError, TypeError) as exc:
        raise BadRequest("the body must be JSON", "bad_body") from exc
    result = review_queue.answer(ReviewApiSettings.from_env(), reviewer(), parse_answer(body))
    logger.info("review answer", extra={"reviewer": reviewer(), **result})
    if result["outcome"] == "applied":
        metrics.add_metric(name="ReviewAnswers", unit=MetricUnit.Count, value=1)
    return result


@app.post("/review/undo")
def undo() -> dict:
    return review_queue.undo(ReviewApiSettings.from_env(), reviewer())


@app.get("/review/stats")
def stats() -> dict:
    return review_queue.stats(ReviewApiSettings.from_env(), reviewer())


@app.get("/review/dashboard")
def dashboard_figures() -> dict:
    s = ReviewApiSettings.from_env()
    return dashboard.gather(s.ITEMS_TABLE, s.CHAMPION_PARAMETER, s.CERTIFICATION_CONFIDENCE)


@app.exception_handler(ClientError)
def client_error(exc: ClientError) -> Response:
    logger.info("review request refused", extra={"code": exc.code, "reason": exc.message})
    return Response(
        status_code=http_status(exc),
        content_type=content_types.APPLICATION_JSON,
        body={"error": exc.code, "message": exc.message},
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
