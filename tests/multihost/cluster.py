"""A hub and its spokes as containers on a private Docker network, driven the way a user would.

Every Docker object made here carries the run's unique prefix and is removed by `Cluster.close()`,
which the pytest fixture calls even when a test fails. The hub's MCP/HTTP port is published on
127.0.0.1 only; the spoke plane stays on the private network.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

import anyio

IMAGE = "llmbox:test"
BOX_IMAGE = "llmbox-test-box:latest"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FAKE_CLAUDE = os.path.join(ROOT, "tests", "fixtures", "fake-claude")
TOKEN_RE = re.compile(r"\b[0-9a-f]{64}\b")


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, predicate, timeout: float, interval: float = 0.2):
    """Polls `predicate` until it returns a truthy value; returns (value, seconds taken)."""
    start = time.monotonic()
    last_exc = None
    while time.monotonic() - start < timeout:
        try:
            value = predicate()
            if value:
                return value, time.monotonic() - start
        except Exception as exc:  # the thing we wait for may fail until it is up
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")


@dataclass
class ToolResult:
    is_error: bool
    structured: dict
    text: str


@dataclass
class Cluster:
    heartbeat_s: int = 1
    prefix: str = field(default_factory=lambda: f"llmbox-mh-{os.getpid()}-{int(time.time()) % 100000}")
    port: int = field(default_factory=free_port)
    spokes: dict = field(default_factory=dict)
    api_key: str = ""

    @property
    def net(self) -> str:
        return f"{self.prefix}-net"

    @property
    def hub(self) -> str:
        return f"{self.prefix}-hub"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        docker("network", "create", "--label", f"llmbox-test={self.prefix}", self.net)
        docker("volume", "create", "--label", f"llmbox-test={self.prefix}", f"{self.prefix}-hubstate")
        # The hub serves MCP beyond loopback (0.0.0.0 in its container): it starts only once an
        # API key exists, so the operator mints one on the state volume first.
        out = docker(
            "run", "--rm", "--label", f"llmbox-test={self.prefix}",
            "-v", f"{self.prefix}-hubstate:/data", IMAGE,
            "apikey", "create", "--name", "multihost", "--state", "/data/state.json",
        ).stdout
        self.api_key = out.splitlines()[0]
        assert re.fullmatch(r"llmbox_[0-9a-f]{64}", self.api_key), out
        self.create_hub()
        self.start_hub()

    def create_hub(self, *extra: str) -> None:
        """Creates the hub container on the state volume (again, after `docker rm`, to change flags)."""
        docker(
            "create", "--name", self.hub, "--label", f"llmbox-test={self.prefix}",
            "--network", self.net, "--network-alias", "hub",
            "-p", f"127.0.0.1:{self.port}:8080",
            "-v", f"{self.prefix}-hubstate:/data",
            IMAGE, "hub", "--no-local",
            "--listen", "0.0.0.0:8080", "--spoke-listen", "0.0.0.0:8081",
            "--state", "/data/state.json", "--heartbeat", f"{self.heartbeat_s}s",
            "--public-url", self.url, "--box-image", BOX_IMAGE, "--log-level", "debug", *extra,
        )

    def start_hub(self) -> float:
        docker("start", self.hub)
        _, took = wait_for("hub /healthz", lambda: self.http_get("/healthz")[0] == 200, 30)
        return took

    def close(self) -> None:
        ids = docker("ps", "-aq", "--filter", f"label=llmbox-test={self.prefix}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        for name in self.spokes:
            self.remove_boxes_of(name)
        docker("network", "rm", self.net, check=False)
        vols = docker("volume", "ls", "-q", "--filter", f"label=llmbox-test={self.prefix}", check=False).stdout.split()
        if vols:
            docker("volume", "rm", "-f", *vols, check=False)

    def remove_boxes_of(self, spoke: str) -> None:
        ns = self.namespace(spoke)
        ids = docker("ps", "-aq", "--filter", f"label=com.llmbox.namespace={ns}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False)
        nets = docker("network", "ls", "-q", "--filter", f"label=com.llmbox.namespace={ns}", check=False).stdout.split()
        for net in nets:
            docker("network", "rm", net, check=False)

    # ---- the operator's commands, run inside the hub container -----------------------------

    def hub_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return docker("exec", self.hub, "/llmbox", *args, "--state", "/data/state.json", check=check)

    def token(self, spoke: str, ttl: str = "1h") -> str:
        out = self.hub_cli("spoke", "token", "create", "--name", self.namespace(spoke), "--ttl", ttl).stdout
        found = TOKEN_RE.findall(out)
        assert len(set(found)) == 1, f"token create must print the token once-ish: {out!r}"
        return found[0]

    def namespace(self, spoke: str) -> str:
        """Spoke names are unique per run so parallel runs on one daemon never share boxes."""
        return f"{spoke}-{self.prefix[-11:]}".replace("_", "-")

    def spoke_container(self, spoke: str, suffix: str = "") -> str:
        return f"{self.prefix}-{spoke}{suffix}"

    def start_spoke(self, spoke: str, token: str, suffix: str = "") -> str:
        name = self.spoke_container(spoke, suffix)
        vol = f"{self.prefix}-{spoke}{suffix}-cred"
        docker("volume", "create", "--label", f"llmbox-test={self.prefix}", vol)
        docker(
            "run", "-d", "--name", name, "--label", f"llmbox-test={self.prefix}",
            "--network", self.net,
            "-v", "/var/run/docker.sock:/var/run/docker.sock",
            "-v", f"{vol}:/data",
            "-v", f"{FAKE_CLAUDE}:/fake-claude:ro",
            IMAGE, "spoke", "--hub", "ws://hub:8081/spoke/connect", "--token", token,
            "--credentials", "/data/credentials.json", "--heartbeat", f"{self.heartbeat_s}s",
            "--claude-bin", "/fake-claude", "--log-level", "debug",
        )
        self.spokes[spoke] = name
        return name

    def logs(self, container: str) -> str:
        res = docker("logs", container, check=False)
        return res.stdout + res.stderr

    # ---- what a user sees --------------------------------------------------------------------

    def http_get(self, path: str):
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def http_post_form(self, path: str, form: dict):
        data = urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=90) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def call(self, tool: str, args: dict | None = None, timeout: float = 120) -> ToolResult:
        """One MCP tool call with the official Python SDK (1.x), a fresh session each time."""
        import httpx
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        async def go():
            with anyio.fail_after(timeout):
                headers = {"Authorization": f"Bearer {self.api_key}"}
                async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=timeout)) as hc:
                    async with streamable_http_client(self.url + "/mcp", http_client=hc) as streams:
                        async with ClientSession(streams[0], streams[1]) as session:
                            await session.initialize()
                            return await session.call_tool(tool, args or {})

        res = anyio.run(go)
        text = "".join(getattr(c, "text", "") for c in res.content)
        return ToolResult(bool(res.isError), res.structuredContent or {}, text)

    def spoke_status(self) -> dict:
        res = self.call("list_spokes")
        assert not res.is_error, res.text
        return {s["name"]: s for s in res.structured["spokes"]}

    def connected(self, spoke: str) -> bool:
        s = self.spoke_status().get(self.namespace(spoke))
        return bool(s and s["connected"])

    def state_file(self) -> dict:
        """The hub's state file, parsed (it must always parse, whatever happened to the hub)."""
        tar = subprocess.run(
            ["docker", "cp", f"{self.hub}:/data/state.json", "-"], capture_output=True, check=True
        ).stdout
        import io
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            member = tf.extractfile("state.json")
            assert member is not None
            return json.loads(member.read())
