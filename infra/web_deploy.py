"""`make web-deploy STACK=…`: the built dashboard (`web/dist`) into a deployed stack's
private bucket, then a CloudFront invalidation.

Order matters for people who have the page open while it runs: the hashed bundles go
first (immutable, cached for a year; old ones are kept, so a page loaded a minute ago
still finds its chunks), `index.html` last (`no-store`), so no page ever points at a
bundle that is not there yet. The bucket and distribution come from the stack's
outputs (`DashboardBucketName`, `DashboardDistributionId`).
"""

from __future__ import annotations

import argparse
import mimetypes
import sys
import time
from pathlib import Path
from typing import Any

IMMUTABLE = "public, max-age=31536000, immutable"
NO_STORE = "no-store"
SHORT = "public, max-age=300"


def cache_control(rel: str) -> str:
    if rel.startswith("assets/"):
        return IMMUTABLE
    return NO_STORE if rel.endswith(".html") else SHORT


def upload_order(dist: Path) -> list[Path]:
    """Assets first, other files next, index.html last; stamps and reports are not uploaded."""
    files = [p for p in dist.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != "size.json"]

    def rank(p: Path) -> tuple[bool, bool, str]:
        rel = p.relative_to(dist).as_posix()
        return p.name == "index.html", not rel.startswith("assets/"), rel

    return sorted(files, key=rank)


def stack_outputs(cfn: Any, stack: str) -> dict[str, str]:
    found = cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    return {o["OutputKey"]: o["OutputValue"] for o in found}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", required=True)
    parser.add_argument("--dist", type=Path, default=Path("web/dist"))
    args = parser.parse_args(argv)
    if not (args.dist / "index.html").is_file():
        print(f"{args.dist}/index.html is missing: run `make web` first", file=sys.stderr)
        return 2

    import boto3

    outputs = stack_outputs(boto3.client("cloudformation"), args.stack)
    bucket, distribution = outputs.get("DashboardBucketName"), outputs.get("DashboardDistributionId")
    if not bucket or not distribution:
        print(f"stack {args.stack} has no DashboardBucketName/DashboardDistributionId outputs", file=sys.stderr)
        return 2
    s3: Any = boto3.client("s3")
    for path in upload_order(args.dist):
        rel = path.relative_to(args.dist).as_posix()
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        s3.upload_file(str(path), bucket, rel, ExtraArgs={"ContentType": kind, "CacheControl": cache_control(rel)})
        print(f"  s3://{bucket}/{rel}  ({cache_control(rel)})")
    cloudfront: Any = boto3.client("cloudfront")
    answer = cloudfront.create_invalidation(DistributionId=distribution, InvalidationBatch={
        "Paths": {"Quantity": 1, "Items": ["/*"]}, "CallerReference": f"web-deploy-{time.time_ns()}"})
    print(f"invalidation {answer['Invalidation']['Id']} of distribution {distribution} started")
    print(f"dashboard: {outputs.get('PublicUrl', '(see the PublicUrl output)')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
