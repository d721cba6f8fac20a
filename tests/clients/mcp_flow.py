#!/usr/bin/env python3
"""Drive a whole llmbox box life through the official MCP Python SDK (1.x or 2.x).

Run by the Rust integration tests inside `.venv-mcp1` (mcp<2: ClientSession handshake era) or
`.venv-mcp2` (mcp>=2: the default high-level Client, which probes 2026-07-28 `server/discover`
first). The activation step goes through the hub's page like a person would (GET the page, POST
the code), never through MCP. Exits non-zero with a message on the first failed expectation,
and checks that no MCP output ever held the authorize URL or a code.
"""

import argparse
import asyncio
import datetime
import html.parser
import importlib.metadata
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

MCP_VERSION = importlib.metadata.version("mcp")
MAJOR = int(MCP_VERSION.split(".")[0])

TOOLS = {
    "create_llmbox",
    "get_llmbox",
    "list_llmboxes",
    "list_spokes",
    "destroy_llmbox",
    "get_llmbox_logs",
    "exec_llmbox",
}


class Failed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failed(what)


def field(obj, snake, camel):
    """Result fields are camelCase in 1.x and snake_case in 2.x."""
    if hasattr(obj, snake):
        return getattr(obj, snake)
    return getattr(obj, camel)


class PageParser(html.parser.HTMLParser):
    """Collects the ids the activation page promises (its DOM contract)."""

    def __init__(self):
        super().__init__()
        self.ids = {}
        self.texts = {}
        self._open = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids[attrs["id"]] = attrs
            self._open = attrs["id"]

    def handle_data(self, data):
        if self._open:
            self.texts[self._open] = self.texts.get(self._open, "") + data

    def handle_endtag(self, tag):
        self._open = None


def fetch_page(url, code=None):
    data = None
    headers = {}
    if code is not None:
        data = urllib.parse.urlencode({"code": code}).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=120) as resp:
        body = resp.read().decode()
        for name in ("Cache-Control", "Referrer-Policy", "X-Frame-Options", "Content-Security-Policy"):
            expect(resp.headers.get(name), f"page lacks header {name}")
    parser = PageParser()
    parser.feed(body)
    return parser


class Flow:
    def __init__(self, call, args):
        self.call_tool = call
        self.args = args
        self.seen = []  # every MCP output, for the leak check

    async def call(self, name, arguments, want_error=False):
        result = await self.call_tool(name, arguments)
        is_error = bool(field(result, "is_error", "isError"))
        structured = field(result, "structured_content", "structuredContent")
        texts = [c.text for c in result.content if getattr(c, "type", "") == "text"]
        self.seen.append(json.dumps(structured))
        self.seen.extend(texts)
        expect(is_error == want_error, f"{name}({arguments}): isError={is_error}: {texts}")
        expect(structured is not None, f"{name}: no structuredContent")
        if not want_error:
            expect(json.loads(texts[0]) == structured, f"{name}: text differs from structuredContent")
        return structured

    async def run(self, list_tools):
        a = self.args
        tools = await list_tools()
        names = {t.name for t in tools.tools}
        expect(names == TOOLS, f"tools/list gave {sorted(names)}")
        for t in tools.tools:
            expect(field(t, "output_schema", "outputSchema"), f"{t.name} has no outputSchema")

        create_args = {"box_id": a.box_id, "description": "e2e"}
        if a.spoke:
            create_args["spoke"] = a.spoke
        created = await self.call("create_llmbox", create_args)
        expect(created["status"] == "pending", f"create: {created}")
        link = created["auth_url"]
        expect(link.startswith(a.public_url + "/auth/"), f"auth_url {link}")
        # The names a Go-era chatbot reads (Go llmbox's create_llmbox), and the link's expiry.
        expect("activation_url" not in created and "next_step" not in created, f"old names: {created}")
        expect(isinstance(created["instructions"], str) and "auth_url" in created["instructions"], f"instructions: {created}")
        expect(len(created["container_id"]) == 12, f"container_id: {created}")
        expires_at = datetime.datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
        left = (expires_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        expect(0 < created["expires_in_seconds"] <= 300 and abs(left - created["expires_in_seconds"]) < 30,
               f"expiry: {created['expires_at']} / {created['expires_in_seconds']} s")
        if a.spoke:
            expect(created["spoke"] == a.spoke, f"create landed on {created['spoke']}")

        got = await self.call("get_llmbox", {"box_id": a.box_id})
        expect(got["status"] == "pending" and got["auth_url"] == link, f"get pending: {got}")

        page = fetch_page(link)
        expect("signin" in page.ids and "activate" in page.ids, "page lacks #signin or #activate")
        authorize_url = page.ids["signin"]["href"]
        expect("oauth/authorize" in authorize_url, f"sign-in link {authorize_url}")
        codes = [a.code]
        if a.bad_code_first:
            page = fetch_page(link, "bad-code")
            expect("error" in page.ids and "signin" in page.ids, "bad code: no #error/#signin")
            codes.append("bad-code")
            got = await self.call("get_llmbox", {"box_id": a.box_id})
            expect(got["status"] == "error", f"get after bad code: {got}")
        page = fetch_page(link, a.code)
        expect("session-url" in page.ids, f"activation failed: {page.texts.get('error')}")
        session_url = page.ids["session-url"]["href"]

        got = await self.call("get_llmbox", {"box_id": a.box_id})
        expect(got["status"] == "ready" and got["session_url"] == session_url, f"get ready: {got}")
        expect("auth_url" not in got, "a ready box still offers an activation link")

        out = await self.call("exec_llmbox", {"box_id": a.box_id, "command": "echo hello-from-box; echo oops >&2; exit 3"})
        if a.exec_echoes:  # the in-memory box manager echoes the command instead of running it
            expect("hello-from-box" in out["stdout"], f"exec: {out}")
        else:
            expect(out["exit_code"] == 3 and "hello-from-box" in out["stdout"] and "oops" in out["stderr"], f"exec: {out}")
        logs = await self.call("get_llmbox_logs", {"box_id": a.box_id, "tail": 100})
        expect(isinstance(logs["logs"], str), f"logs: {logs}")
        listed = await self.call("list_llmboxes", {})
        mine = [b for b in listed["boxes"] if b["box_id"] == a.box_id]
        expect(len(mine) == 1 and mine[0]["status"] == "ready", f"list: {listed}")
        spokes = await self.call("list_spokes", {})
        expect(any(s["name"] == mine[0]["spoke"] and s["connected"] for s in spokes["spokes"]), f"spokes: {spokes}")
        gone = await self.call("destroy_llmbox", {"box_id": a.box_id})
        expect(gone["status"] == "destroyed", f"destroy: {gone}")
        err = await self.call("get_llmbox", {"box_id": a.box_id}, want_error=True)
        expect("no box with id" in err["error"], f"get after destroy: {err}")
        bad = await self.call("create_llmbox", {"box_id": "Not_Valid"}, want_error=True)
        expect("invalid box id" in bad["error"], f"bad id: {bad}")

        everything = "\n".join(self.seen)
        expect(authorize_url not in everything and "oauth/authorize" not in everything, "an MCP output held the authorize URL")
        for code in codes:
            expect(code not in everything, f"an MCP output held the code {code!r}")


def bearer_headers(args):
    return {"Authorization": f"Bearer {args.bearer}"} if args.bearer else {}


def refused_without_key(args):
    """With --bearer, the same endpoint without the key must answer 401 + WWW-Authenticate."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    req = urllib.request.Request(args.url, data=body, headers=headers)
    try:
        urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as e:
        expect(e.code == 401, f"without the key: HTTP {e.code}")
        expect(e.headers.get("WWW-Authenticate", "").startswith('Bearer realm="llmbox"'), "no WWW-Authenticate")
        return
    raise Failed("the endpoint answered without the API key")


async def main_v1(args):
    from mcp import ClientSession

    if args.bearer:
        # The documented 1.x way to send a header on every request.
        from mcp.client.streamable_http import streamablehttp_client

        transport = streamablehttp_client(args.url, headers=bearer_headers(args), sse_read_timeout=300)
        async with transport as streams:
            return await session_flow(ClientSession, streams, args)
    import httpx
    from mcp.client.streamable_http import streamable_http_client

    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=300)) as hc:
        async with streamable_http_client(args.url, http_client=hc) as streams:
            return await session_flow(ClientSession, streams, args)


async def session_flow(ClientSession, streams, args):
    async with ClientSession(streams[0], streams[1]) as session:
        init = await session.initialize()
        version = field(init, "protocol_version", "protocolVersion")
        expect(version == "2025-11-25", f"negotiated {version}")
        await session.send_ping()
        flow = Flow(session.call_tool, args)
        await flow.run(session.list_tools)
        return version


async def main_v2(args):
    from mcp import Client

    mode = "legacy" if args.legacy else "auto"
    server = args.url
    if args.bearer:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        hc = httpx2.AsyncClient(headers=bearer_headers(args), timeout=httpx2.Timeout(30, read=300))
        server = streamable_http_client(args.url, http_client=hc)
    async with Client(server, read_timeout_seconds=300, mode=mode) as client:
        version = client.protocol_version
        want = "2025-11-25" if args.legacy else "2026-07-28"
        expect(version == want, f"the {mode} Client negotiated {version}, not {want}")
        flow = Flow(client.call_tool, args)
        await flow.run(client.list_tools)
        return version


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="MCP endpoint")
    p.add_argument("--public-url", required=True, help="the hub's --public-url")
    p.add_argument("--box-id", required=True)
    p.add_argument("--spoke", default="")
    p.add_argument("--code", default="e2e-good-code-4242")
    p.add_argument("--bad-code-first", action="store_true")
    p.add_argument("--exec-echoes", action="store_true", help="the hub runs in-memory boxes")
    p.add_argument("--legacy", action="store_true", help="mcp 2.x: force the initialize handshake")
    p.add_argument("--bearer", default="", help="an API key sent as Authorization: Bearer")
    args = p.parse_args()
    try:
        if args.bearer:
            refused_without_key(args)
        version = asyncio.run(main_v1(args) if MAJOR < 2 else main_v2(args))
    except Failed as e:
        print(f"mcp_flow (mcp {MCP_VERSION}): FAILED: {e}", file=sys.stderr)
        return 1
    print(f"mcp_flow (mcp {MCP_VERSION}, protocol {version}): OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
