"""The local two-node cluster: a head labelled titan and a worker labelled panda.

Both run on this machine with one logical GPU each, so placement, failover and
node loss can be exercised without the real hardware. It serves the production
``serve_config.yaml``, with the proxy on loopback and on the head only.

    python -m cluster.local up        # start both nodes, deploy, wait for /health
    python -m cluster.local status
    python -m cluster.local kill panda    # hard-kill one node (chaos)
    python -m cluster.local start panda   # bring it back
    python -m cluster.local down      # stop this cluster's processes only

Ray's GCS listens on 6390 (Redis owns 6379 here). Only processes started with
this cluster's RAY_TMPDIR are ever stopped; other Ray clusters are left alone.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import yaml

from cluster.start_node import GCS_PORT, ray_start_args
from topology.nodes import load_nodes

REPO = Path(__file__).resolve().parent.parent

# Tuned failure detection (ray-serve-facts.md): a dead node is noticed in ~1.5 s.
HEALTH_ENV = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
# Serve's throughput-optimized mode (docs/performance.md): each node's Gateway answers HTTP
# itself (direct ingress, ports from 30000), gRPC between replicas, user code on the
# replica's own event loop, buffered request logs (flushed every second by deployments.logs).
# In that mode replicas call each other over gRPC, which refuses a message over 4 MiB unless
# told otherwise: an upload goes to WhisperSTT as it came (up to 25 MiB, OpenAI's limit), so
# 64 MiB bounds every request the edge admits (tests/unit/test_serve_env.py).
# A proxy starting beside a node's other processes on a busy 2-core machine missed Serve's
# 5 s readiness check three times in a row; the controller killed it and `serve.start`
# failed with it. 30 s is room for a slow start, and a proxy that never answers is still
# replaced.
REPLICA_MESSAGE_BYTES = 64 * 1024 * 1024
SERVE_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1"),
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(REPLICA_MESSAGE_BYTES),
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
}


@dataclass(frozen=True)
class LocalCluster:
    """Ports and paths of one local cluster; tests make their own on other ports."""

    gcs_port: int = GCS_PORT
    dashboard_port: int = 8265
    http_port: int = 8000
    metrics_port: int = 8090
    state_dir: Path = Path(os.environ.get("HER_SERVE_LOCAL", "/tmp/her-serve-local"))
    logical_cpus: int = 8

    @property
    def ray_tmpdir(self) -> Path:
        return self.state_dir / "ray"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def token(self) -> str:
        """The cluster's Ray auth token, made once and kept in the state folder."""
        path = self.state_dir / "ray-auth-token"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        """Environment for every ray/serve command aimed at this cluster."""
        self.ray_tmpdir.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            **HEALTH_ENV,
            **SERVE_ENV,
            "RAY_TMPDIR": str(self.ray_tmpdir),
            "RAY_ADDRESS": self.address,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token(),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }

    # -- nodes -----------------------------------------------------------------

    def start_node(self, host: str) -> None:
        node = load_nodes()[host]
        args = ray_start_args(node, self.address, num_cpus=self.logical_cpus)
        if node.role == "head":
            args = [a for a in args if not a.startswith("--port=")] + [
                f"--port={self.gcs_port}",
                f"--dashboard-port={self.dashboard_port}",
                f"--metrics-export-port={self.metrics_port}",
            ]
        else:
            args.append(f"--metrics-export-port={self.metrics_port + 1}")
        subprocess.run(args, env=self.env(), check=True, capture_output=True, text=True)

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: those that carry its RAY_TMPDIR."""
        mine, tmp = [], str(self.ray_tmpdir)
        for p in psutil.process_iter(["pid"]):
            try:
                if p.pid != os.getpid() and p.environ().get("RAY_TMPDIR") == tmp:
                    mine.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return mine

    def node_processes(self, host: str) -> list[psutil.Process]:
        """The raylet of node ``host`` and everything it started (its workers)."""
        port = self._node_manager_port(host)
        for p in self.processes():
            try:
                cmd = " ".join(p.cmdline())
            except psutil.NoSuchProcess:
                continue
            if "raylet" in p.name() and f"--node_manager_port={port}" in cmd:
                return [p, *p.children(recursive=True)]
        return []

    def kill_node(self, host: str) -> int:
        """Hard-kill a node (SIGKILL to its raylet and workers), like pulling the plug."""
        procs = self.node_processes(host)
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        return len(procs)

    def _node_manager_port(self, host: str) -> int:
        import ray

        ray.init(address=self.address, ignore_reinit_error=True, logging_level="ERROR")
        for n in ray.nodes():
            if n["Alive"] and n.get("Labels", {}).get("host") == host:
                return int(n["NodeManagerPort"])
        raise LookupError(f"no live node labelled host={host}")

    # -- serve -----------------------------------------------------------------

    def serve_config(self) -> Path:
        """serve_config.yaml with the proxy on loopback, head only (one host, one port)."""
        config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
        config["proxy_location"] = "HeadOnly"
        config["http_options"] = {"host": "127.0.0.1", "port": self.http_port}
        path = self.state_dir / "serve_config.local.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def deploy(self) -> None:
        subprocess.run(
            ["serve", "deploy", str(self.serve_config()),
             "-a", f"http://127.0.0.1:{self.dashboard_port}"],
            env=self.env(), check=True,
        )

    def wait_ready(self, since: float = 0.0, timeout_s: float = 600) -> dict:
        """Wait until /health answers and the app deployed after ``since`` is running."""
        deadline, last = time.monotonic() + timeout_s, "no answer yet"
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.base_url}/health", timeout=5)
                if r.status_code == 200:
                    status = self._serve_status(since)
                    if status == "RUNNING":
                        return r.json()
                    if status == "DEPLOY_FAILED":
                        raise RuntimeError("deploy failed; see `python -m cluster.local status`")
                    last = f"application status {status}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            time.sleep(2)
        raise TimeoutError(f"cluster not ready after {timeout_s:.0f} s: {last}")

    def _serve_status(self, since: float) -> str:
        """The app's status, or STALE while Serve still reports an earlier deploy."""
        out = subprocess.run(
            ["serve", "status", "-a", f"http://127.0.0.1:{self.dashboard_port}"],
            env=self.env(), capture_output=True, text=True,
        ).stdout
        app = (yaml.safe_load(out) or {}).get("applications", {}).get("assistant", {})
        if app.get("last_deployed_time_s", 0) < since:
            return "STALE"
        return app.get("status", "MISSING")

    def up(self) -> dict:
        if self.processes():
            print(f"local cluster already running ({self.address}); deploying")
        else:
            for host in ("titan", "panda"):
                print(f"starting node {host} ...", flush=True)
                self.start_node(host)
        print("deploying serve_config.yaml ...", flush=True)
        since = time.time() - 1
        self.deploy()
        health = self.wait_ready(since)
        print(f"ready at {self.base_url}  (dashboard http://127.0.0.1:{self.dashboard_port})")
        return health

    def down(self) -> int:
        procs = self.processes()
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            p.kill()
        return len(procs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "kill", "start", "env"])
    parser.add_argument("host", nargs="?", choices=["titan", "panda"])
    a = parser.parse_args(argv)
    c = LocalCluster()
    if a.command == "up":
        health = c.up()
        for name, state in health["deployments"].items():
            print(f"  {name:<16}{state}")
    elif a.command == "down":
        print(f"stopped {c.down()} processes")
    elif a.command == "status":
        subprocess.run(["ray", "status"], env=c.env())
        subprocess.run(["serve", "status", "-a", f"http://127.0.0.1:{c.dashboard_port}"], env=c.env())
    elif a.command == "kill":
        print(f"killed {c.kill_node(a.host or 'panda')} processes of {a.host or 'panda'}")
    elif a.command == "start":
        c.start_node(a.host or "panda")
    elif a.command == "env":  # for `eval $(python -m cluster.local env)`
        env = c.env()
        for k in ("RAY_TMPDIR", "RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            print(f"export {k}={env[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
