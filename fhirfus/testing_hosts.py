"""Several fhirfus hosts on one machine, behind a real load balancer, for tests and benchmarks.

Each host is a network namespace (``ip netns``) with its own address on a veth link to this
machine's namespace, running ``fhirfus serve``; HAProxy listens on loopback and spreads requests
over them, marks a dead host down by its health check and sends the request elsewhere. The hosts
share one PostgreSQL database, reached through its Unix socket (a namespace has its own loopback
but the same file system), and one export directory, as hosts would share a volume.

Not used by the server. Needs root, iproute2 and HAProxy; ``unavailable()`` says what is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from fhirfus.testing import NotReady, free_port, wait_until_ready

POSTGRES_SOCKET_DIR = "/var/run/postgresql"
HOST_PORT = 8000


def unavailable() -> str | None:
    """Why hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "haproxy"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {'iproute2' if tool == 'ip' else tool})"
    if not Path(POSTGRES_SOCKET_DIR).is_dir():
        return f"no PostgreSQL socket directory at {POSTGRES_SOCKET_DIR}"
    probe = f"fhfprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def socket_url(url: str) -> str:
    """The same PostgreSQL database through its Unix socket: reachable from every namespace."""
    parsed = make_url(url)
    local = URL.create(parsed.drivername, parsed.username, parsed.password, None, None, parsed.database,
                       {"host": POSTGRES_SOCKET_DIR})
    return local.render_as_string(hide_password=False)


@dataclass
class Host:
    name: str  # the namespace, and HAProxy's name of the server
    address: str
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}:{HOST_PORT}"

    def kill(self) -> None:
        """As a host dies: every process of it at once, no shutdown."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@dataclass
class Cluster:
    hosts: list[Host]
    balancer: str  # http://127.0.0.1:PORT, HAProxy

    def host(self, name: str) -> Host:
        return next(host for host in self.hosts if host.name == name)


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


@contextmanager
def _namespace(name: str, subnet: str) -> Iterator[str]:
    """A namespace linked to this one: ``subnet``.1 here, ``subnet``.2 there (its address)."""
    outside, inside = f"{name}a", f"{name}b"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", name)
        _run("ip", "addr", "add", f"{subnet}.1/30", "dev", outside)
        _run("ip", "link", "set", outside, "up")
        _run("ip", "netns", "exec", name, "ip", "addr", "add", f"{subnet}.2/30", "dev", inside)
        _run("ip", "netns", "exec", name, "ip", "link", "set", inside, "up")
        _run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield f"{subnet}.2"
    finally:
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _wait_until_up(url: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    try:
        wait_until_ready(f"{url}/fhir/metadata", process, seconds, interval=0.3, request_timeout=5)
    except NotReady as error:
        raise RuntimeError(f"host {error}: {log.read_text()[-2000:]}") from error


def _haproxy_config(port: int, hosts: list[tuple[str, str]]) -> str:
    servers = "\n".join(
        f"    server {name} {address}:{HOST_PORT} check inter 500ms fall 2 rise 1" for name, address in hosts)
    return f"""global
    maxconn 2048
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 3
    option redispatch
frontend fhirfus
    bind 127.0.0.1:{port}
    default_backend hosts
backend hosts
    balance roundrobin
    option httpchk GET /fhir/metadata
    http-response set-header X-Fhirfus-Host %s
{servers}
"""


@contextmanager
def hosts_behind_balancer(count: int, env: Mapping[str, str], workdir: Path, *, workers: int = 1) -> Iterator[Cluster]:
    """``count`` hosts serving with the environment ``env`` (whole: the caller's own plus the settings;
    its database URL from ``socket_url``), behind HAProxy."""
    token = uuid.uuid4().hex[:5]
    second_octet = 200 + int(token, 16) % 50
    with ExitStack() as stack:
        addresses = [(f"fhf{token}{i}", stack.enter_context(_namespace(f"fhf{token}{i}", f"10.{second_octet}.{i}")))
                     for i in range(count)]
        hosts = []
        for name, address in addresses:
            log = workdir / f"{name}.log"
            process = subprocess.Popen(
                ["ip", "netns", "exec", name, sys.executable, "-m", "fhirfus.cli", "serve", "--host", address,
                 "--port", str(HOST_PORT), "--workers", str(workers), "--no-migrate"],
                env=dict(env), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
            host = Host(name, address, process, log)
            stack.callback(host.kill)
            hosts.append(host)
        for host in hosts:
            _wait_until_up(host.url, host.process, host.log)
        port = free_port()
        config = workdir / "haproxy.cfg"
        config.write_text(_haproxy_config(port, addresses))
        balancer = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=(workdir / "haproxy.log").open("w"),
                                    stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(balancer.wait, timeout=30)
        stack.callback(balancer.kill)
        _wait_until_up(f"http://127.0.0.1:{port}", balancer, workdir / "haproxy.log")
        yield Cluster(hosts, f"http://127.0.0.1:{port}")
