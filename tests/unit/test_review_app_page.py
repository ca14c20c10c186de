"""The review page as `flywheel review open` uploads it: configuration and CSP (pure)."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest

from dataflywheel import review_app

CONFIG = review_app.config_for(
    "https://abc.execute-api.eu-west-1.amazonaws.com", "client123", "eu-west-1", "prod"
)


def test_the_page_carries_its_configuration_and_a_csp_for_exactly_its_script():
    html = review_app.render(CONFIG)

    block = re.search(r'<script id="config" type="application/json">(.*?)</script>', html, re.S)
    assert json.loads(block.group(1)) == {
        "api_url": "https://abc.execute-api.eu-west-1.amazonaws.com",
        "client_id": "client123",
        "cognito_endpoint": "https://cognito-idp.eu-west-1.amazonaws.com/",
        "region": "eu-west-1",
        "stack": "prod",
    }
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    (script,) = re.findall(r"<script>(.*?)</script>", html, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    assert (
        "connect-src https://abc.execute-api.eu-west-1.amazonaws.com "
        "https://cognito-idp.eu-west-1.amazonaws.com;" in csp
    )
    assert csp.startswith("default-src 'none'")


def test_configuration_values_cannot_close_the_script_element():
    html = review_app.render({**CONFIG, "stack": "</script><script>alert(1)</script>"})
    assert "alert(1)</script>" not in html
    block = re.search(r'<script id="config" type="application/json">(.*?)</script>', html, re.S)
    assert json.loads(block.group(1))["stack"] == "</script><script>alert(1)</script>"


def test_a_page_without_its_markers_is_refused():
    with pytest.raises(ValueError, match="configuration"):
        review_app.render(CONFIG, page="<html><script>x</script></html>")
