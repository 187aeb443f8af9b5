"""docker-py (PyPI `docker`) driving a shoal swarm through a node's docker.sock.

Run by tests/e2e/docker_py.rs against a 3-node netns cluster formed by shoal, with:
  SHOAL_DOCKER_SOCK   node1's docker.sock (the manager)
  SHOAL_WORKER_SOCK   node3's docker.sock (a worker)
  SHOAL_BIN           the shoal binary, the services' program ("image")
  SHOAL_API_SOCK      node1's shoal API socket, for cross-checks with the shoal CLI
  SHOAL_CLIENT_NETNS  a netns path outside the cluster, to reach published ports from
  SHOAL_NODE_ADDRS    the nodes' addresses, comma-separated

Every step goes through docker-py's DockerClient (the models, as scripts use them) and checks
what it says against the cluster: the shoal CLI's view of the same objects, and the published
port answering on every node. A failed check raises, so the process exits non-zero with the
traceback naming the step.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import docker
from docker.errors import APIError, NotFound
from docker.types import EndpointSpec, SecretReference, ConfigReference, ServiceMode

SOCK = os.environ["SHOAL_DOCKER_SOCK"]
WORKER_SOCK = os.environ["SHOAL_WORKER_SOCK"]
SHOAL_BIN = os.environ["SHOAL_BIN"]
API_SOCK = os.environ["SHOAL_API_SOCK"]
CLIENT_NETNS = os.environ["SHOAL_CLIENT_NETNS"]
NODE_ADDRS = os.environ["SHOAL_NODE_ADDRS"].split(",")


def shoal(*args):
    """The shoal CLI on node1; its stdout (it must succeed)."""
    out = subprocess.run(
        [SHOAL_BIN, "-H", f"unix://{API_SOCK}", *args], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise AssertionError(f"shoal {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def shoal_json(*args):
    return json.loads(shoal(*args))


def wait_for(what, condition, timeout=20.0):
    """Polls `condition` (returning a truthy value when met) for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except (APIError, AssertionError) as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def step(name):
    print(f"docker-py: {name}", flush=True)


def http_get(addr, port):
    out = subprocess.run(
        ["nsenter", f"--net={CLIENT_NETNS}", "curl", "-s", "-m", "2",
         f"http://{addr}:{port}/"],
        capture_output=True, text=True,
    )
    return out.stdout if out.returncode == 0 else None


def ping_version_info(client):
    step("ping, version, info")
    assert client.ping() is True
    assert client.version()["ApiVersion"] == "1.47", client.version()
    swarm = client.info()["Swarm"]
    assert swarm["LocalNodeState"] == "active", swarm
    assert swarm["ControlAvailable"] is True, swarm
    assert swarm["Nodes"] == 3 and swarm["Managers"] == 1, swarm


def swarm_inspect(client):
    step("swarm: inspect, join tokens, update")
    client.swarm.reload()
    attrs = client.swarm.attrs
    assert attrs["ID"], attrs
    tokens = attrs["JoinTokens"]
    assert tokens["Worker"].startswith("SWMTKN-1-"), tokens
    assert tokens["Manager"].startswith("SWMTKN-1-"), tokens
    assert tokens["Worker"].strip() == shoal("swarm", "join-token", "-q", "worker").strip()
    # Rotating the worker token: docker-py sends the current version and the rotate flag.
    client.swarm.update(rotate_worker_token=True)
    client.swarm.reload()
    rotated = client.swarm.attrs["JoinTokens"]["Worker"]
    assert rotated != tokens["Worker"], "the worker token did not change"
    assert rotated.strip() == shoal("swarm", "join-token", "-q", "worker").strip()


def nodes(client):
    step("nodes: list, get, update")
    listed = client.nodes.list()
    assert len(listed) == 3, listed
    by_name = {n.attrs["Description"]["Hostname"]: n for n in listed}
    assert sorted(by_name) == ["node1", "node2", "node3"], sorted(by_name)
    managers = client.nodes.list(filters={"role": "manager"})
    assert [n.attrs["Description"]["Hostname"] for n in managers] == ["node1"]
    node2 = by_name["node2"]
    spec = dict(node2.attrs["Spec"])
    spec["Labels"] = {"zone": "b"}
    spec["Availability"] = "drain"
    assert node2.update(spec) is True
    node2.reload()
    assert node2.attrs["Spec"]["Availability"] == "drain", node2.attrs["Spec"]
    seen = shoal_json("node", "inspect", "node2")[0]
    assert seen["Spec"]["Availability"] == "drain", seen["Spec"]
    assert seen["Spec"]["Labels"] == {"zone": "b"}, seen["Spec"]
    spec = dict(node2.attrs["Spec"])
    spec["Availability"] = "active"
    node2.update(spec)
    node2.reload()
    assert node2.attrs["Spec"]["Availability"] == "active"


def networks(client):
    step("networks: create, list, get, remove")
    net = client.networks.create(
        "backend", driver="overlay", attachable=True, labels={"tier": "data"}
    )
    assert net.id
    got = client.networks.get("backend")
    assert got.attrs["Driver"] == "overlay", got.attrs
    assert got.attrs["Labels"] == {"tier": "data"}, got.attrs
    assert "backend" in [n.name for n in client.networks.list()]
    assert "backend" in shoal("network", "ls")
    with_label = client.networks.list(filters={"label": "tier=data"})
    assert [n.name for n in with_label] == ["backend"], with_label
    return net


def secrets_and_configs(client):
    step("secrets and configs: create, list, get, remove")
    secret = client.secrets.create(name="db_password", data=b"hunter2", labels={"app": "web"})
    assert secret.id
    got = client.secrets.get("db_password")
    assert got.name == "db_password"
    assert "Data" not in got.attrs["Spec"] or not got.attrs["Spec"]["Data"], got.attrs
    assert [s.name for s in client.secrets.list(filters={"name": "db_password"})] == ["db_password"]
    assert "db_password" in shoal("secret", "ls")
    try:
        client.secrets.create(name="db_password", data=b"other")
        raise AssertionError("a second secret with the same name was created")
    except APIError as e:
        assert e.status_code == 409, e

    config = client.configs.create(name="web_conf", data=b"greeting=hi\n")
    got = client.configs.get("web_conf")
    assert got.name == "web_conf"
    assert "web_conf" in shoal("config", "ls")
    return secret, config


def services_and_tasks(client, net, secret, config):
    step("services: create (program as image), tasks, published port")
    # Tasks share the node's file system, so a config's target is a file that exists there
    # (shoal mounts the config over it, as a bind mount's target must exist).
    fd, conf_target = tempfile.mkstemp(prefix="shoal-docker-py-", suffix=".conf")
    os.close(fd)
    service = client.services.create(
        SHOAL_BIN,
        args=["whoami", "--port", "80"],
        name="web",
        mode=ServiceMode("replicated", replicas=2),
        endpoint_spec=EndpointSpec(ports={8080: 80}),
        networks=[net.id],
        env=["GREETING=hi"],
        labels={"app": "web"},
        secrets=[SecretReference(secret.id, "db_password")],
        configs=[ConfigReference(config.id, "web_conf", filename=conf_target)],
    )
    assert service.id
    assert client.services.get("web").id == service.id

    def running_tasks():
        tasks = service.tasks(filters={"desired-state": "running"})
        running = [t for t in tasks if t["Status"]["State"] == "running"]
        if len(running) != 2:
            raise AssertionError(
                [(t["Status"]["State"], t["Status"].get("Err")) for t in tasks],
                shoal("service", "ps", "web"),
            )
        return running

    tasks = wait_for("2 running tasks of web", running_tasks)
    assert {t["ServiceID"] for t in tasks} == {service.id}
    shoal_ps = shoal("service", "ps", "web", "--format", "json")
    for t in tasks:
        assert t["ID"] in shoal_ps, (t["ID"], shoal_ps)
    for addr in NODE_ADDRS:
        wait_for(f"web on {addr}:8080", lambda a=addr: http_get(a, 8080))

    # The secret and the config are in the tasks, where the spec put them.
    task_id = tasks[0]["ID"]
    secret_data = shoal("exec", task_id, "--", "cat", "/run/secrets/db_password")
    assert secret_data == "hunter2", repr(secret_data)
    conf = shoal("exec", task_id, "--", "cat", conf_target)
    assert conf == "greeting=hi\n", repr(conf)

    step("services: list with filters, inspect")
    assert [s.name for s in client.services.list(filters={"label": "app=web"})] == ["web"]
    assert client.services.list(filters={"name": "nothing"}) == []
    spec = client.services.get("web").attrs["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Env"] == ["GREETING=hi"], spec

    step("services: scale, update, a stale version refused")
    service.scale(3)
    wait_for(
        "3 running tasks of web",
        lambda: len([t for t in service.tasks(filters={"desired-state": "running"})
                     if t["Status"]["State"] == "running"]) == 3,
    )
    service.reload()
    service.update(env=["GREETING=hello"])
    service.reload()
    assert service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["GREETING=hello"]
    shoal_spec = shoal_json("service", "inspect", "web")[0]["Spec"]
    assert shoal_spec["TaskTemplate"]["ContainerSpec"]["Env"] == ["GREETING=hello"], shoal_spec
    # An update with a stale version is refused as dockerd refuses it.
    stale = service.version - 1
    try:
        client.api.update_service(service.id, stale, name="web",
                                  task_template=service.attrs["Spec"]["TaskTemplate"])
        raise AssertionError("an update with a stale version was applied")
    except APIError as e:
        assert "update out of sequence" in str(e.explanation), e

    step("worker: dockerd's refusal")
    worker = docker.DockerClient(base_url=f"unix://{WORKER_SOCK}")
    try:
        worker.services.list()
        raise AssertionError("a worker listed services")
    except APIError as e:
        assert e.status_code == 503, e
        assert "not a swarm manager" in str(e.explanation), e

    step("services: remove")
    service.remove()
    try:
        client.services.get("web")
        raise AssertionError("web is still there")
    except NotFound:
        pass
    wait_for("web gone from shoal", lambda: service.id not in shoal("service", "ls", "-q"))
    os.unlink(conf_target)


def image_and_command(client):
    step("services: an image and a command read back as sent, and kept by an update")
    # docker-py's usual form: the image names no program here (shoal runs the command and
    # says so in the create answer's Warnings), the command is what runs.
    service = client.services.create("alpine", command=["sleep", "300"], name="sleeper")
    container = client.services.get("sleeper").attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == "alpine", container
    assert container["Command"] == ["sleep", "300"], container
    assert "Args" not in container, container
    service.reload()
    service.update(env=["A=1"])
    service.reload()
    container = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert container["Command"] == ["sleep", "300"], container
    assert container["Env"] == ["A=1"], container
    argv = shoal_json("service", "inspect", "sleeper")[0]["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert argv["Command"] == ["sleep", "300"], argv
    wait_for(
        "sleeper running",
        lambda: [t for t in service.tasks(filters={"desired-state": "running"})
                 if t["Status"]["State"] == "running"],
    )
    service.remove()


def cleanup(client, net, secret, config):
    step("remove the network, secret and config")
    # The network stays in use until web's tasks are gone.
    wait_for("backend removed", lambda: net.remove() is None)
    secret.remove()
    config.remove()
    assert client.secrets.list() == []
    assert client.configs.list() == []
    assert "backend" not in [n.name for n in client.networks.list()]


def main():
    client = docker.DockerClient(base_url=f"unix://{SOCK}")
    ping_version_info(client)
    swarm_inspect(client)
    nodes(client)
    net = networks(client)
    secret, config = secrets_and_configs(client)
    services_and_tasks(client, net, secret, config)
    image_and_command(client)
    cleanup(client, net, secret, config)
    print("docker-py: all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
