"""The local stack serves the template's HttpApi routes behind the Cognito JWT authorizer.

Tokens come from moto's cognito-idp (the stack's user pool, the reviewer ``flywheel up``
creates); no token, an expired one, another pool's or another app's -> 401.
"""

from __future__ import annotations

import json
import re
import stat
import time

import pytest
import requests
from joserfc import jwk, jwt
from moto.utilities.utils import load_resource

from samlocal.moto_server import client
from samlocal.stack import LocalStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("review-stack")
    s = LocalStack(data, sagemaker=False, schedules=False)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def reviewer(stack) -> dict:
    return json.loads((stack.data_dir / "reviewer.json").read_text())


def login(moto_url: str, client_id: str, username: str, password: str) -> dict:
    got = client("cognito-idp", moto_url).initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": password},
    )
    return got["AuthenticationResult"]


def stats(stack, token: str | None, scheme: str = "Bearer ") -> requests.Response:
    headers = {"Authorization": f"{scheme}{token}"} if token is not None else {}
    return requests.get(f"{stack.http_api.url}/review/stats", headers=headers, timeout=60)


def test_up_creates_a_reviewer_who_can_sign_in_and_call_the_api(stack, reviewer):
    # Given the reviewer file flywheel up wrote (owner-only) and the stack's outputs
    path = stack.data_dir / "reviewer.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stack.info["outputs"]["ReviewApiUrl"] == stack.http_api.url
    assert stack.info["outputs"]["ReviewUserPoolClientId"] == reviewer["client_id"]

    # When the reviewer signs in with USER_PASSWORD_AUTH
    tokens = login(stack.moto.url, reviewer["client_id"], "reviewer", reviewer["password"])

    # Then the ID token and the access token both pass the authorizer
    for token in (tokens["IdToken"], tokens["AccessToken"]):
        got = stats(stack, token)
        assert got.status_code == 200, got.text
        assert got.json()["reviewer"] == "reviewer"
    assert stats(stack, tokens["IdToken"], scheme="").status_code == 200  # no Bearer prefix
    body = requests.get(
        f"{stack.http_api.url}/review/next",
        params={"count": "1;drop"},
        headers={"Authorization": f"Bearer {tokens['IdToken']}"},
        timeout=60,
    )
    assert body.status_code == 400  # the function's own answer, through the gateway


def test_missing_garbage_expired_and_foreign_tokens_are_401(stack, reviewer):
    moto = stack.moto.url
    issuer = f"https://cognito-idp.us-east-1.amazonaws.com/{reviewer['user_pool_id']}"
    # an expired token with a valid signature (moto signs every pool with this key)
    key = jwk.RSAKey.import_key(
        load_resource("moto.cognitoidp.models", "resources/jwks-private.json")
    )
    now = int(time.time())
    claims = {"iss": issuer, "aud": reviewer["client_id"], "sub": "x", "token_use": "id"}
    expired = jwt.encode(
        {"kid": "dummy", "alg": "RS256"}, {**claims, "iat": now - 7200, "exp": now - 3600}, key
    )
    fresh = jwt.encode({"kid": "dummy", "alg": "RS256"}, {**claims, "exp": now + 600}, key)
    assert stats(stack, fresh).status_code == 200  # the same token, not expired: accepted
    # a token of another user pool, and one of another app client of the same pool
    idp = client("cognito-idp", moto)
    other = idp.create_user_pool(PoolName="someone-elses")["UserPool"]["Id"]
    other_client = idp.create_user_pool_client(
        UserPoolId=other, ClientName="x", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    idp.admin_create_user(UserPoolId=other, Username="mallory", MessageAction="SUPPRESS")
    idp.admin_set_user_password(
        UserPoolId=other, Username="mallory", Password="Passw0rd!Passw0rd", Permanent=True
    )
    foreign = login(moto, other_client, "mallory", "Passw0rd!Passw0rd")["IdToken"]
    app = idp.create_user_pool_client(
        UserPoolId=reviewer["user_pool_id"],
        ClientName="another-app",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"],
    )["UserPoolClient"]["ClientId"]
    other_app = login(moto, app, "reviewer", reviewer["password"])["IdToken"]
    tampered = fresh[:-4] + ("AAAA" if not fresh.endswith("AAAA") else "BBBB")

    for token in (None, "", "not-a-jwt", expired, foreign, other_app, tampered):
        for route in stack.http_api.routes:  # every route the template declares
            method = "GET" if route.method == "ANY" else route.method
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
            got = requests.request(
                method, f"{stack.http_api.url}{path}", headers=headers, json={}, timeout=60
            )
            assert (got.status_code, got.json()) == (401, {"message": "Unauthorized"}), (
                token,
                path,
            )
    assert requests.get(f"{stack.http_api.url}/nope", timeout=10).status_code == 404


def test_the_gateway_serves_the_template_routes_each_behind_the_authorizer(stack, reviewer):
    routes = {r.route_key: r for r in stack.http_api.routes}
    assert {
        "GET /review/next",
        "POST /review/answers",
        "POST /review/undo",
        "GET /review/stats",
    } <= set(routes)
    for route in routes.values():
        assert route.authorizer is not None, route.route_key
        assert route.authorizer.issuer.endswith(f"/{reviewer['user_pool_id']}")


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "code"),
    [
        ("GET", "/review/next", {"count": "../../etc/passwd"}, None, "bad_count"),
        ("GET", "/review/next", {"count": "5&count=6"}, None, "bad_count"),
        ("GET", "/review/next", [("count", "1"), ("count", "2")], None, "bad_count"),  # "1,2"
        (
            "POST",
            "/review/answers",
            None,
            {"item_id": "../../labels/x.csv", "label": "cat"},
            "bad_item_id",
        ),
        (
            "POST",
            "/review/answers",
            None,
            {"item_id": "%2e%2e%2fx", "action": "skip"},
            "bad_item_id",
        ),
        (
            "POST",
            "/review/answers",
            None,
            {"item_id": "a" * 64, "label": "../../x"},
            "invalid_label",
        ),
        (
            "POST",
            "/review/answers",
            None,
            {"item_id": "a" * 64, "label": "s3://b/k"},
            "invalid_label",
        ),
        ("POST", "/review/answers", None, {"item_id": "a" * 64, "action": "../skip"}, "bad_action"),
        ("POST", "/review/answers", None, {"item_id": "a" * 64, "key": "images/x.png"}, "bad_body"),
    ],
)
def test_injection_in_any_parameter_is_400_through_the_gateway(
    stack, reviewer, method, path, query, body, code
):
    token = login(stack.moto.url, reviewer["client_id"], "reviewer", reviewer["password"])
    got = requests.request(
        method,
        f"{stack.http_api.url}{path}",
        params=query,
        json=body,
        headers={"Authorization": f"Bearer {token['IdToken']}"},
        timeout=60,
    )
    assert (got.status_code, got.json()["error"]) == (400, code), got.text


def test_the_user_pool_and_the_reviewer_survive_a_restart(tmp_path):
    # Given a stack that was up once and stopped (state saved)
    with LocalStack(tmp_path, sagemaker=False, schedules=False):
        first = json.loads((tmp_path / "reviewer.json").read_text())

    # When it starts again on the same data directory
    with LocalStack(tmp_path, sagemaker=False, schedules=False) as again:
        second = json.loads((tmp_path / "reviewer.json").read_text())
        tokens = login(again.moto.url, second["client_id"], "reviewer", second["password"])

        # Then it is the same pool, app client and password, and the login works
        assert {k: first[k] for k in ("user_pool_id", "client_id", "password")} == {
            k: second[k] for k in ("user_pool_id", "client_id", "password")
        }
        assert stats(again, tokens["IdToken"]).status_code == 200


def test_cors_preflight_needs_no_token_and_only_the_data_buckets_origin_is_allowed(stack, reviewer):
    # The template allows https://<data bucket>.s3[.<region>].amazonaws.com: locally that
    # bucket's origin is moto's S3 endpoint, where `flywheel review open` serves the page.
    page_origin = stack.moto.url
    api = stack.http_api.url

    def preflight(origin: str, method: str = "GET", headers: str = "authorization") -> dict:
        got = requests.options(
            f"{api}/review/stats",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": headers,
            },
            timeout=10,
        )
        assert got.status_code == 204, got.text  # the gateway answers: no authorizer, no function
        return {k.lower(): v for k, v in got.headers.items()}

    allowed = preflight(page_origin, "POST", "authorization,content-type")
    assert allowed["access-control-allow-origin"] == page_origin
    assert set(allowed["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
    assert set(allowed["access-control-allow-headers"].split(", ")) == {
        "authorization",
        "content-type",
    }
    assert allowed["access-control-max-age"] == "600"
    for refused in (
        preflight("https://evil.example"),
        preflight(page_origin, "DELETE"),
        preflight(page_origin, "GET", "authorization,x-other"),
    ):
        assert "access-control-allow-origin" not in refused

    # Real requests: the allowed origin gets the header on 200s and on the authorizer's 401
    token = login(stack.moto.url, reviewer["client_id"], "reviewer", reviewer["password"])
    ok = requests.get(
        f"{api}/review/stats",
        headers={"Authorization": f"Bearer {token['IdToken']}", "Origin": page_origin},
        timeout=60,
    )
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == page_origin
    denied = requests.get(f"{api}/review/stats", headers={"Origin": page_origin}, timeout=10)
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == page_origin
    foreign = requests.get(
        f"{api}/review/stats",
        headers={"Authorization": f"Bearer {token['IdToken']}", "Origin": "https://evil.example"},
        timeout=60,
    )
    assert foreign.status_code == 200  # CORS is the browser's guard, not an authorizer
    assert "Access-Control-Allow-Origin" not in foreign.headers
    # and an OPTIONS without the preflight headers is an ordinary request: no route, 404
    assert requests.options(f"{api}/review/stats", timeout=10).status_code == 404


def test_review_open_publishes_the_configured_page_behind_a_presigned_get(stack, reviewer, capsys):
    from dataflywheel import cli

    # When a person runs `flywheel review open` against the running stack
    assert cli.main(["--data-dir", str(stack.data_dir), "review", "open", "--expires", "120"]) == 0
    url, how = capsys.readouterr().out.splitlines()[:2]

    # Then the URL is a presigned GET of app/index.html on moto's S3 endpoint (the origin
    # the API's CORS allows), serving the page configured for this stack
    assert url.startswith(f"{stack.moto.url}/{stack.info['outputs']['DataBucketName']}/app/")
    assert "Signature=" in url or "X-Amz-Signature=" in url
    assert "reviewer" in how
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert f'"client_id": "{reviewer["client_id"]}"' in page.text
    assert f'"api_url": "{stack.http_api.url}"' in page.text
    assert "Content-Security-Policy" in page.text
