"""template.yaml's dashboard block: a private bucket behind CloudFront (Origin Access Control),
`/v1/*` to the HTTP API uncached with everything the API reads, security headers, and the
router function, which is run here under Node and must agree with the local stack
(infra/local/static.py) on every path."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.local import static, template

pytestmark = pytest.mark.template

CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"


def resources() -> dict[str, Any]:
    return dict(template.load()["Resources"])


def props(name: str) -> dict[str, Any]:
    return dict(resources()[name]["Properties"])


def distribution() -> dict[str, Any]:
    return dict(props("DashboardDistribution")["DistributionConfig"])


def test_the_bucket_is_private_encrypted_and_owner_enforced() -> None:
    p = props("DashboardBucket")
    assert p["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert p["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert "WebsiteConfiguration" not in p  # not a public website endpoint: CloudFront reads it through OAC


def test_only_this_distribution_reads_the_bucket_over_tls() -> None:
    statements = props("DashboardBucketPolicy")["PolicyDocument"]["Statement"]
    allow = [s for s in statements if s["Effect"] == "Allow"]
    assert len(allow) == 1
    (grant,) = allow
    assert grant["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert set(grant["Action"]) == {"s3:GetObject", "s3:ListBucket"}
    source = grant["Condition"]["StringEquals"]["AWS:SourceArn"]
    assert "distribution/${DashboardDistribution}" in json.dumps(source)
    deny = [s for s in statements if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_s3_origin_uses_origin_access_control() -> None:
    oac = props("DashboardOriginAccessControl")["OriginAccessControlConfig"]
    assert (oac["OriginAccessControlOriginType"], oac["SigningBehavior"], oac["SigningProtocol"]) == (
        "s3", "always", "sigv4")
    origins = {o["Id"]: o for o in distribution()["Origins"]}
    s3 = origins["dashboard"]
    assert s3["OriginAccessControlId"] == {"GetAtt": "DashboardOriginAccessControl.Id"}
    assert s3["S3OriginConfig"] == {"OriginAccessIdentity": ""}  # OAC, not the legacy OAI
    api = origins["api"]
    assert "${HttpApi}.execute-api" in json.dumps(api["DomainName"])
    assert api["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"


def test_default_behaviour_is_the_dashboard_with_the_router_and_headers() -> None:
    d = distribution()
    default = d["DefaultCacheBehavior"]
    assert default["TargetOriginId"] == "dashboard"
    assert default["ViewerProtocolPolicy"] == "redirect-to-https"
    assert default["CachePolicyId"] == CACHING_OPTIMIZED
    assert default["ResponseHeadersPolicyId"] == {"Ref": "DashboardSecurityHeaders"}
    (fn,) = default["FunctionAssociations"]
    assert fn["EventType"] == "viewer-request"
    assert fn["FunctionARN"] == {"GetAtt": "DashboardRouterFunction.FunctionMetadata.FunctionARN"}
    # Distribution-wide error responses would turn the API's own 403/404 answers into the page.
    assert "CustomErrorResponses" not in d


def test_the_api_behaviour_forwards_everything_and_caches_nothing() -> None:
    (api,) = distribution()["CacheBehaviors"]
    assert api["PathPattern"] == "/v1/*" and api["TargetOriginId"] == "api"
    assert set(api["AllowedMethods"]) == {"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"}
    assert api["ViewerProtocolPolicy"] == "https-only"  # a redirect would turn a POST into a GET
    # Cookies (sid), query strings and every viewer header but Host (Origin, Idempotency-Key, …).
    assert api["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST
    assert api["ResponseHeadersPolicyId"] == {"Ref": "DashboardSecurityHeaders"}
    assert api["CachePolicyId"] == {"Ref": "DashboardApiCachePolicy"}
    policy = props("DashboardApiCachePolicy")["CachePolicyConfig"]
    assert policy["MinTTL"] == 0 and policy["DefaultTTL"] == 0 and policy["MaxTTL"] <= 1
    key = policy["ParametersInCacheKeyAndForwardedToOrigin"]
    assert key["HeadersConfig"] == {"HeaderBehavior": "whitelist", "Headers": ["Authorization"]}  # API tokens
    assert key["CookiesConfig"] == {"CookieBehavior": "all"}
    assert key["QueryStringsConfig"] == {"QueryStringBehavior": "all"}


def test_security_headers() -> None:
    cfg = props("DashboardSecurityHeaders")["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    csp = cfg["ContentSecurityPolicy"]["ContentSecurityPolicy"]
    directives = {d.split()[0]: d.split()[1:] for d in (x.strip() for x in csp.split(";")) if d}
    assert directives["default-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["script-src"][0] == "'self'" and "https://js.stripe.com" in directives["script-src"]
    assert directives["connect-src"] == ["'self'", "https://api.stripe.com"]
    assert "https://hooks.stripe.com" in directives["frame-src"]
    allowed = {src for values in directives.values() for src in values if src.startswith("https://")}
    assert all(src.endswith(("stripe.com",)) for src in allowed), allowed  # self and Stripe only
    assert not any("unsafe" in src for values in directives.values() for src in values)
    assert cfg["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000
    assert cfg["ContentTypeOptions"] == {"Override": True}
    assert cfg["FrameOptions"]["FrameOption"] == "DENY"
    assert cfg["ReferrerPolicy"]["ReferrerPolicy"] == "strict-origin-when-cross-origin"


def test_public_url_is_the_distribution_unless_a_domain_or_url_is_given() -> None:
    t = template.load()
    assert t["Parameters"]["PublicUrl"]["Default"] == ""
    assert {"DomainName", "CertificateArn"} <= set(t["Parameters"])
    env = t["Globals"]["Function"]["Environment"]["Variables"]
    assert env["PUBLIC_URL"] == {"If": ["HasCustomDomain", {"Sub": "https://${DomainName}"}, {"Ref": "PublicUrl"}]}
    assert env["PUBLIC_URL_PARAM"]["If"][0] == "DerivedPublicUrl"
    param = resources()["DashboardPublicUrlParameter"]
    assert param["Condition"] == "DerivedPublicUrl"
    assert param["Properties"]["Value"] == {"Sub": "https://${DashboardDistribution.DomainName}"}
    assert "PublicUrl" in t["Outputs"] and "DashboardBucketName" in t["Outputs"]
    assert "DashboardDistributionId" in t["Outputs"]
    aliases = distribution()["Aliases"]
    assert aliases == {"If": ["HasCustomDomain", [{"Ref": "DomainName"}], {"Ref": "AWS::NoValue"}]}


def test_every_function_may_read_the_derived_public_url() -> None:
    policy = resources()["DashboardPublicUrlReadPolicy"]
    roles = {r["Ref"] for r in policy["Properties"]["Roles"]}
    assert roles == {f"{name}Role" for name in template.functions()}
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "ssm:GetParameter"
    assert "parameter/gpurent/${AWS::StackName}/public-url" in statement["Resource"]["Sub"]


# ---------------------------------------------------------------- the router function, run

PATHS = ["/", "/login", "/app", "/app/", "/app/rentals", "/app/billing", "/app/x/y", "/appx", "/assets/index-1.js",
         "/favicon.svg", "/index.html", "/nothing", "/login/extra"]

HARNESS = """
const code = require('fs').readFileSync(0, 'utf8');
const handler = new Function(code + '; return handler;')();
const cases = JSON.parse(process.argv[1]);
const out = cases.map(([uri, cookies]) => handler({request: {uri, cookies, headers: {}, querystring: {}},
                                                   context: {eventType: 'viewer-request'}}));
process.stdout.write(JSON.stringify(out));
"""


def run_router(cases: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to run the CloudFront Function (make installs the web build tools with it)")
    code = props("DashboardRouterFunction")["FunctionCode"]
    r = subprocess.run([node, "-e", HARNESS, json.dumps(cases)], input=code, capture_output=True, text=True,
                       timeout=30, check=True)
    return list(json.loads(r.stdout))


def test_router_redirects_root_by_session_cookie() -> None:
    anon, signed, empty = run_router([("/", {}), ("/", {"sid": {"value": "abc"}}), ("/", {"sid": {"value": ""}})])
    assert anon["statusCode"] == 302 and anon["headers"]["location"]["value"] == "/login"
    assert signed["headers"]["location"]["value"] == "/app"
    assert empty["headers"]["location"]["value"] == "/login"
    assert anon["headers"]["cache-control"]["value"] == "no-store"


def test_router_agrees_with_the_local_stack(tmp_path: Path) -> None:
    """Pages are index.html in both; files are left alone; the local stack only adds its own
    404/None for what the bucket would answer 404."""
    answers = run_router([(p, {}) for p in PATHS if p != "/"])
    for path, answer in zip([p for p in PATHS if p != "/"], answers, strict=True):
        rewritten = answer.get("uri") == "/index.html" and path != "/index.html"
        assert rewritten == static.is_page(path), path
        if not rewritten:
            assert answer["uri"] == path
