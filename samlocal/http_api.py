"""The template's ``HttpApi`` events served on 127.0.0.1, as API Gateway would.

For each function event ``Type: HttpApi`` (``ApiId``, ``Method``, ``Path``) a route;
each request becomes the payload-format-2.0 event API Gateway sends and is invoked
through the same function workers the event router uses. The function's response
(``statusCode``/``headers``/``body``/``isBase64Encoded``/``cookies``, or any JSON value
for a plain 200) becomes the HTTP response.

The API's JWT authorizer (``Auth.DefaultAuthorizer`` or an event's ``Auth.Authorizer``;
``NONE`` opts a route out) is enforced as API Gateway does: the ``Authorization``
header's token (a ``Bearer`` prefix is optional) must be signed by a key of the
issuer's JWKS, carry the configured ``iss``, an ``aud`` (ID token) or ``client_id``
(access token) among the audiences, and not be expired; else 401 before the function
runs. The issuer is moto's cognito-idp (the stack's user pool): its JWKS comes from
moto's ``/<pool id>/.well-known/jwks.json``; joserfc (moto's own JWT library) verifies.
Claims reach the function as ``requestContext.authorizer.jwt.claims`` (as strings).

The API's ``CorsConfiguration`` is honoured as API Gateway does: a preflight (``OPTIONS``
with ``Origin`` and ``Access-Control-Request-Method``) is answered by the gateway itself,
204 and never through the authorizer, with the CORS headers only when the origin, the
method and the requested headers are allowed; every other response to an allowed
``Origin`` (the function's, a 401, a 404) carries ``Access-Control-Allow-Origin``, and CORS
headers a function returns are dropped. Origins are ``*`` or exact. An allowed origin that
is one of the stack's buckets on AWS's S3 endpoint (``https://<bucket>.s3[.<region>]
.amazonaws.com``, where the review page is served from) is that bucket's origin here:
moto's S3 endpoint, which serves its objects path-style.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from samlocal.functions import FunctionPool, FunctionSpec, InvocationError
from samlocal.router import ACCOUNT

log = logging.getLogger(__name__)


class Unauthorized(Exception):
    """The request's token is missing or does not pass the authorizer."""


@dataclass
class JwtAuthorizer:
    issuer: str
    audiences: list[str]
    jwks_url: str
    identity_header: str = "authorization"
    _keys: KeySet | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def keys(self) -> KeySet:
        with self._lock:
            if self._keys is None:
                got = requests.get(self.jwks_url, timeout=10)
                got.raise_for_status()
                self._keys = KeySet.import_key_set(got.json())
            return self._keys

    def verify(self, headers: dict[str, str]) -> dict[str, Any]:
        """The token's claims, or Unauthorized."""
        raw = headers.get(self.identity_header, "").strip()
        token = raw[7:].strip() if raw[:7].lower() == "bearer " else raw
        if not token:
            raise Unauthorized("no token")
        try:
            claims = jwt.decode(token, self.keys(), algorithms=["RS256"]).claims
            jwt.JWTClaimsRegistry(
                leeway=0,
                iss={"essential": True, "value": self.issuer},
                exp={"essential": True},
            ).validate(claims)
        except Exception as exc:  # any failure to verify is a 401, never a 500
            raise Unauthorized(f"invalid token: {exc}") from exc
        audience = claims.get("aud", claims.get("client_id"))
        audiences = audience if isinstance(audience, list) else [audience]
        if not set(map(str, audiences)) & set(self.audiences):
            raise Unauthorized("token for another audience")
        return claims


@dataclass(frozen=True)
class CorsPolicy:
    """An HttpApi's ``CorsConfiguration`` (origins already mapped to local endpoints)."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False

    def allows(self, origin: str) -> bool:
        return "*" in self.allow_origins or origin.lower() in self.allow_origins

    def response_headers(self, origin: str) -> list[tuple[str, str]]:
        """CORS headers for a non-preflight response to ``origin`` (none if not allowed)."""
        if not origin or not self.allows(origin):
            return []
        out = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if self.allow_credentials:
            out.append(("Access-Control-Allow-Credentials", "true"))
        if self.expose_headers:
            out.append(("Access-Control-Expose-Headers", ", ".join(self.expose_headers)))
        return out

    def preflight_headers(
        self, origin: str, method: str, requested_headers: str
    ) -> list[tuple[str, str]]:
        """CORS headers for a preflight; none when anything asked for is not allowed."""
        wanted = {h.strip().lower() for h in requested_headers.split(",") if h.strip()}
        method_ok = "*" in self.allow_methods or method.upper() in self.allow_methods
        headers_ok = "*" in self.allow_headers or wanted <= set(self.allow_headers)
        if not (origin and self.allows(origin) and method_ok and headers_ok):
            return []
        out = [
            ("Access-Control-Allow-Origin", origin),
            ("Vary", "Origin"),
            ("Access-Control-Allow-Methods", ", ".join(self.allow_methods)),
        ]
        if self.allow_headers:
            out.append(("Access-Control-Allow-Headers", ", ".join(self.allow_headers)))
        if self.max_age is not None:
            out.append(("Access-Control-Max-Age", str(self.max_age)))
        if self.allow_credentials:
            out.append(("Access-Control-Allow-Credentials", "true"))
        return out


# https://<bucket>.s3.amazonaws.com or https://<bucket>.s3.<region>.amazonaws.com[.cn]
_S3_ORIGIN = re.compile(
    r"^https://([a-z0-9][a-z0-9-]*)\.s3(?:\.[a-z0-9-]+)?\.amazonaws\.com(?:\.cn)?$"
)


def local_origin(origin: str, buckets: set[str], moto_url: str) -> str:
    """The origin a browser has here for an origin the template allows.

    A stack bucket's S3 endpoint (virtual-hosted in AWS) is moto's endpoint locally
    (path-style); any other origin is kept as written.
    """
    found = _S3_ORIGIN.match(origin.lower())
    if found and found.group(1) in buckets:
        parts = urlsplit(moto_url)
        return f"{parts.scheme}://{parts.netloc}".lower()
    return origin.lower().rstrip("/")


def cors_policy(
    api_properties: dict[str, Any], by_ref: dict[str, str], buckets: set[str], moto_url: str
) -> CorsPolicy | None:
    config = api_properties.get("CorsConfiguration")
    if not config:
        return None
    if isinstance(config, str):  # SAM's short form: one origin
        config = {"AllowOrigins": [config]}

    def strings(key: str) -> list[str]:
        return [str(v) for v in _substitute(config.get(key) or [], by_ref)]

    return CorsPolicy(
        allow_origins=tuple(local_origin(o, buckets, moto_url) for o in strings("AllowOrigins")),
        allow_methods=tuple(m.upper() for m in strings("AllowMethods")),
        allow_headers=tuple(h.lower() for h in strings("AllowHeaders")),
        expose_headers=tuple(h.lower() for h in strings("ExposeHeaders")),
        max_age=int(config["MaxAge"]) if "MaxAge" in config else None,
        allow_credentials=bool(config.get("AllowCredentials", False)),
    )


@dataclass
class Route:
    method: str  # GET, POST, ... or ANY
    path: str  # template path, e.g. /review/{item_id}
    function: str  # logical id
    api_id: str
    authorizer: JwtAuthorizer | None
    cors: CorsPolicy | None = None
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        regex = re.sub(
            r"\\\{([A-Za-z0-9_]+)\\\+\\\}", r"(?P<\1>.+)", re.escape(self.path)
        )  # {proxy+}
        regex = re.sub(r"\\\{([A-Za-z0-9_]+)\\\}", r"(?P<\1>[^/]+)", regex)
        self.pattern = re.compile(f"^{regex}$")

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


def _substitute(value: Any, physical_by_ref: dict[str, str]) -> Any:
    """Predicted names (cfn.resolve) inside strings -> what moto really created."""
    if isinstance(value, list):
        return [_substitute(v, physical_by_ref) for v in value]
    text = str(value)
    for ref in sorted(physical_by_ref, key=len, reverse=True):  # longest first
        text = text.replace(ref, physical_by_ref[ref])
    return text


def routes_from_template(
    resolved: dict[str, Any], specs: list[FunctionSpec], physical: dict[str, str], moto_url: str
) -> list[Route]:
    refs = resolved["Refs"]
    by_ref = {str(refs[lid]): physical[lid] for lid in physical if lid in refs}
    api_by_ref = {
        str(refs[lid]): lid
        for lid, res in resolved["Resources"].items()
        if res["Type"] == "AWS::Serverless::HttpApi"
    }
    buckets = {
        physical[lid]
        for lid, res in resolved["Resources"].items()
        if res["Type"] == "AWS::S3::Bucket" and lid in physical
    }
    routes: list[Route] = []
    for spec in specs:
        for name, event in spec.events.items():
            if event.get("Type") != "HttpApi":
                continue
            props = event.get("Properties") or {}
            api_lid = api_by_ref.get(str(props.get("ApiId", "")))
            if api_lid is None:
                raise ValueError(f"{spec.logical_id}.{name}: HttpApi events need an ApiId")
            api_props = resolved["Resources"][api_lid]["Properties"] or {}
            auth = api_props.get("Auth") or {}
            chosen = (props.get("Auth") or {}).get("Authorizer") or auth.get("DefaultAuthorizer")
            authorizer = None
            if chosen and chosen != "NONE":
                config = auth["Authorizers"][chosen]
                jwt_config = config["JwtConfiguration"]
                issuer = _substitute(jwt_config["issuer"], by_ref)
                header = str(config.get("IdentitySource", "$request.header.Authorization"))
                authorizer = JwtAuthorizer(
                    issuer=issuer,
                    audiences=[str(a) for a in _substitute(jwt_config["audience"], by_ref)],
                    jwks_url=f"{moto_url}/{issuer.rsplit('/', 1)[-1]}/.well-known/jwks.json",
                    identity_header=header.rsplit(".", 1)[-1].lower(),
                )
            routes.append(
                Route(
                    method=str(props.get("Method", "ANY")).upper(),
                    path=str(props.get("Path", "/{proxy+}")),
                    function=spec.logical_id,
                    api_id=api_lid,
                    authorizer=authorizer,
                    cors=cors_policy(api_props, by_ref, buckets, moto_url),
                )
            )
    return routes


def _claim_text(value: Any) -> str:
    # API Gateway hands claims to the function as strings; arrays as "[a b]".
    if isinstance(value, list):
        return "[" + " ".join(map(str, value)) + "]"
    return str(value)


def http_event(
    route: Route,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    params: dict[str, str],
    claims: dict[str, Any] | None,
    host: str,
) -> dict[str, Any]:
    """The payload-format-2.0 event API Gateway sends for this request."""
    query: dict[str, str] = {}
    for k, v in parse_qsl(raw_query, keep_blank_values=True):
        query[k] = f"{query[k]},{v}" if k in query else v  # repeated keys: comma-joined
    now = time.time()
    text_body: str | None = None
    is_base64 = False
    if body:
        try:
            text_body = body.decode("utf-8")
        except UnicodeDecodeError:
            text_body, is_base64 = base64.b64encode(body).decode(), True
    context: dict[str, Any] = {
        "accountId": ACCOUNT,
        "apiId": route.api_id.lower(),
        "domainName": host,
        "domainPrefix": host.split(".")[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": str(uuid.uuid4()),
        "routeKey": route.route_key,
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if claims is not None:
        context["authorizer"] = {
            "jwt": {"claims": {k: _claim_text(v) for k, v in claims.items()}, "scopes": None}
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": {k: v for k, v in headers.items() if k != "cookie"},
        "requestContext": context,
        "isBase64Encoded": is_base64,
    }
    if "cookie" in headers:
        event["cookies"] = [c.strip() for c in headers["cookie"].split(";")]
    if query:
        event["queryStringParameters"] = query
    if params:
        event["pathParameters"] = params
    if text_body is not None:
        event["body"] = text_body
    return event


class HttpApiServer:
    def __init__(
        self, routes: list[Route], pool: FunctionPool, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.routes = routes
        self.pool = pool
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug(format, *args)

            def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(
                self, status: int, doc: Any, extra: list[tuple[str, str]] | None = None
            ) -> None:
                body = json.dumps(doc).encode()
                self._reply(status, body, [("Content-Type", "application/json"), *(extra or [])])

            def _preflight(self, path: str, headers: dict[str, str]) -> None:
                # API Gateway answers it itself: no route, no authorizer, no function.
                policy = server.cors_for(path)
                cors = (
                    policy.preflight_headers(
                        headers.get("origin", ""),
                        headers.get("access-control-request-method", ""),
                        headers.get("access-control-request-headers", ""),
                    )
                    if policy
                    else []
                )
                self._reply(204, b"", cors)

            def _handle(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                policy = server.cors_for(split.path)
                if (
                    self.command == "OPTIONS"
                    and policy is not None
                    and "origin" in headers
                    and "access-control-request-method" in headers
                ):
                    self._preflight(split.path, headers)
                    return
                cors = policy.response_headers(headers.get("origin", "")) if policy else []
                route, params = server.match(self.command, split.path)
                if route is None:
                    self._json(404, {"message": "Not Found"}, cors)
                    return
                claims = None
                if route.authorizer is not None:
                    try:
                        claims = route.authorizer.verify(headers)
                    except Unauthorized as exc:
                        log.info("http api: 401 for %s %s: %s", self.command, split.path, exc)
                        self._json(401, {"message": "Unauthorized"}, cors)
                        return
                event = http_event(
                    route,
                    self.command,
                    split.path,
                    split.query,
                    headers,
                    body,
                    params,
                    claims,
                    headers.get("host", "127.0.0.1"),
                )
                try:
                    result = server.pool.get(route.function).invoke(event)
                except InvocationError as exc:
                    log.warning("http api: %s failed: %s", route.function, exc)
                    self._json(500, {"message": "Internal Server Error"}, cors)
                    return
                status, data, out = response_of(result)
                if policy is not None:  # the gateway's CORS headers replace the function's
                    out = [h for h in out if not h[0].lower().startswith("access-control-")]
                self._reply(status, data, out + cors)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle  # noqa: N815

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        for route in self.routes:
            found = route.pattern.match(path)
            if found and route.method in (method, "ANY"):
                return route, found.groupdict()
        return None, {}

    def cors_for(self, path: str) -> CorsPolicy | None:
        """The CORS configuration of the API that serves ``path`` (any method)."""
        apis = {r.api_id: r.cors for r in self.routes}
        for route in self.routes:
            if route.pattern.match(path):
                return route.cors
        # An unknown path: the API's CORS still applies when there is only one API.
        return next(iter(apis.values())) if len(apis) == 1 else None

    def start(self) -> str:
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="http-api"
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def response_of(result: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
    """A payload-2.0 function result as API Gateway turns it into an HTTP response."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # No statusCode: API Gateway assumes 200 and a JSON body.
        text = result if isinstance(result, str) else json.dumps(result)
        return 200, text.encode(), [("Content-Type", "application/json")]
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    headers += [("Set-Cookie", str(cookie)) for cookie in result.get("cookies") or []]
    return int(result["statusCode"]), data, headers
