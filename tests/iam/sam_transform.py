"""Runs SAM's own transform (samtranslator, the library `sam deploy` uses through
CloudFormation's `AWS::Serverless-2016-10-31` transform) on a template and prints the
CloudFormation template it expands to, as JSON.

Run with the Python of `.sam-venv` (aws-sam-cli ships samtranslator; it pins a pydantic the
app's venv cannot share):

    .sam-venv/bin/python tests/iam/sam_transform.py template.yaml > expanded.json

Local `CodeUri`/`ContentUri` paths are replaced by S3 URIs first, as `sam package` does.
Managed policies named without an ARN are not looked up (there is no AWS account here).
"""

from __future__ import annotations

import json
import os
import sys


class _NoManagedPolicyLookup:
    def load(self) -> dict[str, str]:
        return {}


def main() -> None:
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(sys.argv[1], encoding="utf-8") as f:
        template = yaml_parse(f.read())
    for resource in template.get("Resources", {}).values():
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = "s3://bucket/" + props[key].strip("/")
    json.dump(transform(template, {}, _NoManagedPolicyLookup()), sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
