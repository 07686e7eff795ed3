"""Run inside the Lambda client's own venv (lambda-cloud-client needs pydantic 1): drive it
against the Lambda simulator and print what it parsed. Argument: the settings as JSON."""

from __future__ import annotations

import json
import sys


def main() -> None:
    import lambda_cloud_client
    from lambda_cloud_client.models.launch_instance_request import LaunchInstanceRequest
    from lambda_cloud_client.models.terminate_instance_request import TerminateInstanceRequest

    s = json.loads(sys.argv[1])
    cfg = lambda_cloud_client.Configuration(host=s["LAMBDA_BASE_URL"], access_token=s["LAMBDA_API_KEY"])
    api = lambda_cloud_client.DefaultApi(lambda_cloud_client.ApiClient(cfg))
    types = api.instance_types().data
    region = types["gpu_1x_h100_sxm5"].regions_with_capacity_available[0].name
    launched = api.launch_instance(LaunchInstanceRequest(
        region_name=region, instance_type_name="gpu_1x_h100_sxm5", ssh_key_names=[s["LAMBDA_SSH_KEY_NAME"]],
        name="rent_CLIENTLAMBDA"))
    iid = launched.data.instance_ids[0]
    listed = api.list_instances().data
    one = api.get_instance(iid).data
    gone = api.terminate_instance(TerminateInstanceRequest(instance_ids=[iid])).data
    print(json.dumps({"types": len(types), "id": iid, "listed": len(listed), "status": one.status,
                      "terminated": [i.status for i in gone.terminated_instances]}))


if __name__ == "__main__":
    main()
