"""The review app: one HTML page, served from the data bucket through a presigned GET.

    flywheel review open                      # the local stack (flywheel up)
    flywheel review open --stack NAME         # a deployed stack (your AWS credentials)

The page (``functions/review_api/app/index.html``) is uploaded as ``app/index.html`` with its
configuration filled in (API URL, Cognito app client and endpoint) and a Content Security
Policy that lets it talk to those two only; the printed URL is a presigned GET of it. No
route of the template is anonymous: the page is private like every object in the bucket,
and the API behind it needs a reviewer's Cognito token. The HttpApi's ``CorsConfiguration``
allows the bucket's S3 origin, which is where the page runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PAGE = Path(__file__).resolve().parents[1] / "functions" / "review_api" / "app" / "index.html"
KEY = "app/index.html"
DEFAULT_EXPIRES = 3600
_CONFIG = re.compile(r'(<script id="config" type="application/json">)(.*?)(</script>)', re.S)
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def render(config: dict[str, Any], page: str | None = None) -> str:
    """The page with ``config`` in its JSON block and a CSP naming what it may reach."""
    html = page if page is not None else PAGE.read_text()
    # "<" escaped: the JSON can never close the script element it sits in.
    doc = json.dumps(config, sort_keys=True).replace("<", "\\u003c")
    html, n = _CONFIG.subn(lambda m: m.group(1) + doc + m.group(3), html, count=1)
    if n != 1:
        raise ValueError("the review page has no configuration block")
    scripts = _SCRIPT.findall(html)
    if len(scripts) != 1:
        raise ValueError("the review page must have exactly one inline script")
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    connect = " ".join(sorted({origin(config["api_url"]), origin(config["cognito_endpoint"])}))
    csp = (
        "default-src 'none'; "
        f"script-src 'sha256-{digest}'; "
        "style-src 'unsafe-inline'; "
        # images: presigned GETs of the data bucket (moto is this page's own origin locally)
        "img-src 'self' data: https://*.amazonaws.com https://*.amazonaws.com.cn; "
        f"connect-src {connect}; "
        "base-uri 'none'; form-action 'none'"
    )
    meta = f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
    if "<!--CSP-->" not in html:
        raise ValueError("the review page has no <!--CSP--> marker")
    return html.replace("<!--CSP-->", meta, 1)


def publish(s3: Any, bucket: str, config: dict[str, Any], expires: int = DEFAULT_EXPIRES) -> str:
    """Upload the configured page to ``bucket`` and return a presigned GET of it.

    ``s3`` decides the URL's origin; the API's CORS configuration must allow it (in AWS a
    virtual-hosted client: ``https://<bucket>.s3.<region>.amazonaws.com``).
    """
    s3.put_object(
        Bucket=bucket,
        Key=KEY,
        Body=render(config).encode(),
        ContentType="text/html; charset=utf-8",
        CacheControl="no-store",
    )
    return str(
        s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": KEY}, ExpiresIn=int(expires)
        )
    )


def config_for(api_url: str, client_id: str, region: str, stack: str, cognito: str = "") -> dict:
    return {
        "api_url": api_url,
        "client_id": client_id,
        "cognito_endpoint": cognito or f"https://cognito-idp.{region}.amazonaws.com/",
        "region": region,
        "stack": stack,
    }
