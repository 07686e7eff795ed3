"""Run inside the client venv (vastai, runpod, gpuhunt): drive each public client against
the simulators and print what it parsed as JSON. Argument: the simulators' settings as JSON.

Every call here is one the client's users make; a client that cannot parse a simulator
answer raises, and the script exits non-zero with the traceback.
"""

from __future__ import annotations

import json
import os
import sys


def vast(settings: dict[str, str]) -> dict[str, object]:
    from vastai import VastAI

    origin = settings["VAST_BASE_URL"]
    sdk = VastAI(api_key=settings["VAST_API_KEY"], server_url=origin, raw=True, quiet=True)
    offers = sdk.search_offers(query="gpu_name=RTX_4090 num_gpus=1", limit=500, storage=50.0)
    if isinstance(offers, str):
        offers = json.loads(offers)
    ask = min(offers, key=lambda o: o["dph_total"])["id"]
    created = sdk.create_instance(id=ask, image="ubuntu:24.04", disk=50, label="rent_CLIENTVAST")
    if isinstance(created, str):
        created = json.loads(created)
    contract = created["new_contract"]
    shown = sdk.show_instances()
    # The list filtered on a label, as `vastai show instances-v1 --label …` filters it (its CLI
    # builds this `select_filters`): how our adapter finds a launch's instance by its label.
    from vastai.api import instances as instances_api

    by_label = instances_api.show_instances(sdk.client, select_filters={"label": {"in": ["rent_CLIENTVAST"]}})
    by_other = instances_api.show_instances(sdk.client, select_filters={"label": {"in": ["rent_NOBODY"]}})
    one = sdk.show_instance(id=contract)
    sdk.destroy_instance(id=contract)
    return {"offers": len(offers), "contract": contract, "listed": len(shown) if hasattr(shown, "__len__") else -1,
            "one": bool(one), "by_label": [row["id"] for row in by_label], "by_other": len(by_other)}


def runpod_sdk(settings: dict[str, str]) -> dict[str, object]:
    os.environ["RUNPOD_API_BASE_URL"] = settings["RUNPOD_BASE_URL"]
    import runpod

    runpod.api_key = settings["RUNPOD_API_KEY"]
    gpus = runpod.get_gpus()
    gpu = runpod.get_gpu("NVIDIA H100 80GB HBM3", 2)
    pod = runpod.create_pod("rent_CLIENTRUNPOD", "runpod/base:0.0.0", "NVIDIA H100 80GB HBM3", cloud_type="SECURE",
                            gpu_count=2, container_disk_in_gb=50, ports="22/tcp")
    pods = runpod.get_pods()
    got = runpod.get_pod(pod["id"])
    runpod.terminate_pod(pod["id"])
    return {"gpus": len(gpus), "lowest": gpu["lowestPrice"]["uninterruptablePrice"], "pod": pod["id"],
            "pods": len(pods), "cost": got["costPerHr"]}


def gpuhunt_all(settings: dict[str, str]) -> dict[str, object]:
    import gpuhunt.providers.lambdalabs as lambdalabs
    import gpuhunt.providers.runpod as rp
    import gpuhunt.providers.vastai as vastai
    from gpuhunt import QueryFilter

    vastai.bundles_url = settings["VAST_BASE_URL"] + "/api/v0/bundles/"
    rp.API_URL = settings["RUNPOD_BASE_URL"] + "/graphql"
    lambdalabs.INSTANCE_TYPES_URL = settings["LAMBDA_BASE_URL"] + "/instance-types"
    lambdalabs.IMAGES_URL = settings["LAMBDA_BASE_URL"] + "/images"
    v = vastai.VastAIProvider().get(QueryFilter(gpu_name=["RTX4090"]))
    r = rp.RunpodProvider()._fetch_offers()
    lam = lambdalabs.LambdaLabsProvider(settings["LAMBDA_API_KEY"]).get()
    return {"vast": len(v), "runpod": len(r), "lambda": len(lam),
            "runpod_counts": sorted({i.gpu_count for i in r}), "vast_price": min(i.price for i in v)}


def main() -> None:
    settings = json.loads(sys.argv[1])
    which = sys.argv[2]
    fn = {"vast": vast, "runpod": runpod_sdk, "gpuhunt": gpuhunt_all}[which]
    print(json.dumps(fn(settings)))


if __name__ == "__main__":
    main()
