"""A throwaway Titan + Panda cluster inside this process, for tests and benchmarks.

Like ``cluster.local`` it has a head labelled titan and a worker labelled panda
with one logical GPU each, but it lives only as long as the Python process
that made it: free ports, its own RAY_TMPDIR, stopped with ``stop()``.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import time
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from cluster.local import HEALTH_ENV, SERVE_ENV
from topology.nodes import load_nodes

REPO = Path(__file__).resolve().parent.parent


def quiet_ports() -> range:
    """Ports nothing takes by itself: below the kernel's ephemeral range (where the OS
    puts every outgoing connection and every port-0 bind, Ray's dozens of processes
    included), below Serve's direct-ingress ports (from 30000) and above ``ray start``'s
    worker ports (10000-19999). A port picked there stays free until its owner binds
    it; one picked in the ephemeral range was taken in the half minute before Serve's
    proxy bound it, and a chaos cluster never started."""
    ephemeral = 32768
    with suppress(OSError, ValueError):
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    high = min(30000, ephemeral)
    return range(20000, high) if high > 21000 else range(1024, 65536)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports from ``quiet_ports``, none in use on any address.

    Every socket stays bound until all are picked: ports bound and released one
    by one can come back twice, and Ray refuses a node whose ports repeat.
    """
    ports = quiet_ports()
    with ExitStack() as held:
        picked = []
        for port in random.sample(ports, len(ports)):
            sock = held.enter_context(socket.socket())
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            picked.append(port)
            if len(picked) == count:
                return picked
    raise RuntimeError(f"fewer than {count} free ports in {ports}")


def free_port() -> int:
    return free_ports(1)[0]


NODE_PORTS = ("metrics_export_port", "metrics_agent_port", "dashboard_agent_listen_port",
              "runtime_env_agent_port")
HEAD_PORTS = NODE_PORTS + ("gcs_server_port", "dashboard_port")


def node_ports() -> dict[str, int]:
    """A node's agent ports, all free and distinct."""
    return dict(zip(NODE_PORTS, free_ports(len(NODE_PORTS))))


@contextmanager
def pinned(cores: list[int] | None):
    """Processes started inside inherit these CPU cores (None: no change)."""
    before = os.sched_getaffinity(0)
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def split_cores(hosts: list[str]) -> dict[str, list[int]]:
    """This machine's cores shared out between the hosts, as if each were its own machine."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < len(hosts):
        return {}
    share = len(cores) // len(hosts)
    return {h: cores[i * share:(i + 1) * share] for i, h in enumerate(hosts)}


def serve_app(config: Path = REPO / "serve_config.yaml", app: str = "assistant") -> dict:
    """An application's entry (import_path, args, logging_config...) from a Serve config file."""
    parsed = yaml.safe_load(config.read_text())
    return next(a for a in parsed["applications"] if a["name"] == app)


def serve_args(config: Path = REPO / "serve_config.yaml", app: str = "assistant") -> dict:
    """An application's args from a Serve config file."""
    return serve_app(config, app)["args"]


def serve_options(port: int) -> dict:
    """Serve's proxy and HTTP options, the same at start and at every deploy: one proxy
    on the head, on loopback."""
    return {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": port}}


def gateway_urls(app: str = "assistant") -> dict[str, str]:
    """Node id -> the loopback URL on which that node's Gateway replica answers HTTP itself
    (direct ingress: Serve's target groups name each ingress replica's port)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    replicas = details["applications"][app]["deployments"]["Gateway"]["replicas"]
    node_of = {r["replica_id"]: r["node_id"] for r in replicas}
    return {
        node_of[target["name"].rsplit("#", 1)[-1]]: f"http://127.0.0.1:{target['port']}"
        for group in details.get("target_groups", [])
        if group["protocol"] == "HTTP" and group.get("ingress_deployment_name") == "Gateway"
        for target in group["targets"]
        if target["name"].rsplit("#", 1)[-1] in node_of
    }


@dataclass
class Sandbox:
    cluster: object  # ray.cluster_utils.Cluster
    nodes: dict  # host label -> ray._private.node.Node
    base_url: str
    """Titan's Gateway, straight (direct ingress, as the phone daemon reaches its node's)."""
    token: str
    ray_tmpdir: Path
    metrics_ports: dict[str, int] = field(default_factory=dict)
    """Host label -> that node's Prometheus export port (scrape /metrics there)."""
    worker_args: dict[str, dict] = field(default_factory=dict)
    """How each worker node was started, so a killed one can come back the same."""
    cores: dict[str, list[int]] = field(default_factory=dict)
    """Host label -> the CPU cores its processes are pinned to (empty: not pinned)."""
    proxy_port: int = 0
    """Serve's HTTP proxy on the head: the fallback path through a handle to a Gateway."""

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def kill(self, host: str) -> None:
        """Hard-kill a worker node: SIGKILL to its raylet and workers, like a power cut."""
        self.cluster.remove_node(self.nodes.pop(host), allow_graceful=False)

    def restart(self, host: str) -> None:
        """Bring a killed worker node back with its labels, GPUs and resources."""
        with pinned(self.cores.get(host)):
            self.nodes[host] = self.cluster.add_node(**{**self.worker_args[host], **node_ports()})

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers(), timeout=60, **kw)

    def deploy(self, args: dict) -> None:
        """(Re)deploy the assistant app with these args and wait until it runs.

        The app is built inside the cluster from its import path, as ``serve deploy
        serve_config.yaml`` builds it on Titan. Built in this process instead
        (``serve.run(build_app(args))``), its handles would carry this process's
        transport: Ray calls instead of Serve's gRPC whenever this process had
        imported Serve before ``SERVE_ENV`` was set (docs/performance.md).
        """
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        config = ServeDeploySchema(**serve_options(self.proxy_port),
                                   applications=[{**serve_app(), "args": args}])
        since = time.time()
        _get_global_client().deploy_apps(config)
        self.wait_running(since=since)
        if SERVE_ENV["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1":
            self.wait_direct_ingress("titan")
        self.base_url = self.gateway_url("titan")

    def wait_direct_ingress(self, host: str, timeout_s: float = 60) -> None:
        """Serve lists the Gateways' direct-ingress ports a little after the app runs;
        past the timeout ``gateway_url`` falls back to the proxy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.nodes[host].node_id not in gateway_urls():
            time.sleep(0.5)

    def gateway_url(self, host: str) -> str:
        """The URL on which ``host``'s Gateway answers HTTP itself; the proxy's where direct
        ingress is off."""
        node = self.nodes.get(host)
        return gateway_urls().get(node.node_id, self.proxy_url) if node else self.proxy_url

    def wait_running(self, timeout_s: float = 900, since: float = 0.0) -> None:
        """Wait until the app deployed at or after ``since`` (a time.time()) runs and the
        proxy answers; a redeploy's app reports the last one's status until it is built."""
        from ray import serve

        deadline, status = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            status = serve.status().applications.get("assistant")
            if status and status.last_deployed_time_s >= since:
                if status.status == "RUNNING":
                    if httpx.get(f"{self.proxy_url}/health", timeout=10).status_code == 200:
                        return
                if status.status == "DEPLOY_FAILED":
                    raise RuntimeError(f"app failed to deploy: {status.message}")
            time.sleep(1)
        raise TimeoutError(f"app not running after {timeout_s} s: {status}")

    def stop(self) -> None:
        import ray

        # ray.shutdown() alone: serve.shutdown() costs ~5 s and the processes die with the cluster.
        ray.shutdown()
        self.cluster.shutdown()


def start(token: str, args: dict | None = None, logical_cpus: int = 8,
          pin_cores: bool = False) -> Sandbox:
    """Start titan + panda, Serve on a free loopback port, and deploy ``args``.

    ``pin_cores`` gives each node its own share of this machine's cores, so a
    node starting up or dying does not take CPU from the other, as on two
    machines (the failover tests and benchmark use it).
    """
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="her-serve-ray-")
    os.environ.update(HEALTH_ENV)
    os.environ.update(SERVE_ENV)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["SERVE_AUTH__TOKEN"] = token
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    defs = load_nodes()
    common = {"num_cpus": logical_cpus, "object_store_memory": 200 * 1024 * 1024}
    # One pick for every port of both nodes and the proxy, so none repeats.
    *ports, port = free_ports(len(HEAD_PORTS) + len(NODE_PORTS) + 1)
    head_ports = dict(zip(HEAD_PORTS, ports))
    panda_ports = dict(zip(NODE_PORTS, ports[len(HEAD_PORTS):]))
    cores = split_cores(["titan", "panda"]) if pin_cores else {}
    with pinned(cores.get("titan")):
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                **common,
                **head_ports,
                "num_gpus": defs["titan"].gpus,
                "labels": defs["titan"].labels,
                "resources": defs["titan"].resources,
            },
        )
    panda_args = {
        **common,
        **panda_ports,
        "num_gpus": defs["panda"].gpus,
        "labels": defs["panda"].labels,
        "resources": defs["panda"].resources,
    }
    with pinned(cores.get("panda")):
        panda = cluster.add_node(**panda_args)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    serve.start(**serve_options(port))
    box = Sandbox(
        cluster,
        {"titan": cluster.head_node, "panda": panda},
        f"http://127.0.0.1:{port}",
        token,
        Path(os.environ["RAY_TMPDIR"]),
        {"titan": head_ports["metrics_export_port"], "panda": panda_ports["metrics_export_port"]},
        {"panda": panda_args},
        cores,
        proxy_port=port,
    )
    box.deploy(serve_args() if args is None else args)
    return box
