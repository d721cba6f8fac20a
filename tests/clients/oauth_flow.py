#!/usr/bin/env python3
"""The official MCP Python SDK's OAuth client (`mcp.client.auth.OAuthClientProvider`, 1.x or
2.x: whichever `mcp` this interpreter has) against an llmbox hub started with --mcp-oauth, whose
people sign in at a real OpenID provider (tests/fixtures/oidc/provider.py).

The SDK does the OAuth part itself: discovery from the 401, registration (DCR, or a client ID
metadata document with --client-metadata-url), authorize with PKCE and `resource`, the token
exchange, refresh when the access token expired. The person's part — the hub's sign-in button,
the provider's login form, the hub's consent page — is driven here over plain HTTP (urllib,
one cookie jar), as a browser would follow it.

    oauth_flow.py --url http://127.0.0.1:P/mcp --email E --password P [--box-id B]
                  [--serve-client-metadata] [--wait-refresh SECONDS]

--serve-client-metadata serves a client ID metadata document on a loopback port and hands its
URL to the SDK as `client_metadata_url` (CIMD instead of DCR). The SDK accepts only https URLs
there and the hub fetches plain http only from loopback in its test mode
(--oauth-test-cimd-loopback), so the SDK's URL check is relaxed for this one run.

Prints one JSON object per step on stdout; exits non-zero on the first failure.
"""

import argparse
import asyncio
import html
import http.cookiejar
import importlib.metadata
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

MCP2 = importlib.metadata.version("mcp").startswith("2.")
if MCP2:
    import httpx2 as httpx
else:
    import httpx

from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

REDIRECT = "http://127.0.0.1:9/oauth/callback"


def say(**kw):
    print(json.dumps(kw), flush=True)


class Memory:
    """TokenStorage in memory; remembers every token response it was given."""

    def __init__(self):
        self.tokens = None
        self.client = None
        self.history = []

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken):
        self.tokens = tokens
        self.history.append(tokens)

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, info: OAuthClientInformationFull):
        self.client = info


class Arrived(Exception):
    def __init__(self, url):
        super().__init__(url)
        self.url = url


class StopAtCallback(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if newurl.startswith(REDIRECT):
            raise Arrived(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Person:
    """A browser's worth of HTTP: cookies and redirects, nothing else."""

    def __init__(self, email, password):
        self.email = email
        self.password = password
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), StopAtCallback)
        self.callback = None

    def open(self, url, form=None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        with self.opener.open(url, data=data, timeout=30) as r:
            return r.geturl(), r.read().decode()

    def authorize(self, url):
        """From the authorization URL to the client's callback: returns (code, state, iss)."""
        try:
            where, page = self.open(url)
            # The hub's consent page asks for sign-in first: press the provider's button.
            m = re.search(r'href="(/signin/oidc\?[^"]+)"', page)
            assert m, f"no sign-in button at {where}: {page[:400]}"
            hub = urllib.parse.urljoin(where, "/")
            where, page = self.open(urllib.parse.urljoin(hub, html.unescape(m.group(1))))
            # The provider's own login form.
            m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
            assert m, f"no login form at {where}: {page[:400]}"
            nxt = re.search(r'name="next" value="([^"]*)"', page)
            where, page = self.open(where, {
                "csrfmiddlewaretoken": m.group(1), "username": self.email,
                "password": self.password, "next": html.unescape(nxt.group(1)) if nxt else ""})
            # Back at the hub: the consent page naming the client and where it goes back to.
            assert "/oauth/consent/" in where, f"not on the consent page: {where}: {page[:600]}"
            name = re.search(r'id="client-name">([^<]*)<', page)
            host = re.search(r'id="redirect-host">([^<]*)<', page)
            who = re.search(r'id="signed-in-as">([^<]*)<', page)
            say(step="consent_page", client=html.unescape(name.group(1)) if name else None,
                redirect_host=host.group(1) if host else None,
                signed_in_as=who.group(1) if who else None)
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf, page[:600]
            self.open(where, {"csrf": html.unescape(csrf.group(1)), "decision": "allow"})
        except Arrived as a:
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(a.url).query)
            self.callback = (q.get("code", [None])[0], q.get("state", [None])[0],
                             q.get("iss", [None])[0])
            return
        raise AssertionError("the consent never came back to the client's redirect URI")


def serve_client_metadata():
    """Serves this client's metadata document on loopback; its URL."""
    import http.server
    import threading
    import mcp.client.auth.oauth2 as oauth2

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}/llmbox-sdk-client.json"
    doc = json.dumps({"client_id": url, "client_name": "llmbox SDK test (CIMD)",
                      "redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"],
                      "response_types": ["code"], "token_endpoint_auth_method": "none"}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            say(step="document_fetched", path=self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "max-age=300")
            self.send_header("Content-Length", str(len(doc)))
            self.end_headers()
            self.wfile.write(doc)

        def log_message(self, *a):
            pass

    server.RequestHandlerClass = Handler
    threading.Thread(target=server.serve_forever, daemon=True).start()
    oauth2.is_valid_client_metadata_url = lambda u: u == url
    return url


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--email", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--box-id", default="sdk-box")
    ap.add_argument("--serve-client-metadata", action="store_true")
    ap.add_argument("--wait-refresh", type=float, default=0)
    ap.add_argument("--secrets-out", help="write the code and every token here (for a test that "
                    "checks the hub's log holds none of them)")
    args = ap.parse_args()

    person = Person(args.email, args.password)
    storage = Memory()

    async def redirect_handler(url):
        say(step="authorize", resource=urllib.parse.parse_qs(
            urllib.parse.urlsplit(url).query).get("resource", [None])[0])
        await asyncio.to_thread(person.authorize, url)

    async def callback_handler():
        code, state, iss = person.callback
        if MCP2:
            from mcp.client.auth import AuthorizationCodeResult
            return AuthorizationCodeResult(code=code, state=state, iss=iss)
        return code, state

    metadata = OAuthClientMetadata(
        client_name="llmbox SDK test", redirect_uris=[REDIRECT],
        grant_types=["authorization_code", "refresh_token"], response_types=["code"])
    extra = {}
    if args.serve_client_metadata:
        extra["client_metadata_url"] = serve_client_metadata()
    auth = OAuthClientProvider(
        server_url=args.url, client_metadata=metadata, storage=storage,
        redirect_handler=redirect_handler, callback_handler=callback_handler, **extra)

    async def session_calls(calls):
        out = []
        if MCP2:
            from mcp.client.streamable_http import streamable_http_client
            async with httpx.AsyncClient(auth=auth, timeout=30, follow_redirects=True) as hc, \
                    streamable_http_client(args.url, http_client=hc) as streams:
                async with ClientSession(streams[0], streams[1]) as s:
                    await s.initialize()
                    for name, a in calls:
                        out.append(await s.call_tool(name, a))
        else:
            from mcp.client.streamable_http import streamablehttp_client
            async with streamablehttp_client(args.url, auth=auth) as streams:
                async with ClientSession(streams[0], streams[1]) as s:
                    await s.initialize()
                    for name, a in calls:
                        out.append(await s.call_tool(name, a))
        return out

    def structured(r):
        return getattr(r, "structured_content", None) or getattr(r, "structuredContent", None)

    def is_error(r):
        return getattr(r, "is_error", None) if MCP2 else r.isError

    made, listed = await session_calls([
        ("create_llmbox", {"box_id": args.box_id}), ("list_llmboxes", {})])
    say(step="tools_call", created=not is_error(made),
        boxes=[b["box_id"] for b in structured(listed)["boxes"]],
        client_id=storage.client.client_id, tokens=len(storage.history),
        mcp=importlib.metadata.version("mcp"))
    first = storage.tokens

    if args.wait_refresh:
        await asyncio.sleep(args.wait_refresh)
        (listed,) = await session_calls([("list_llmboxes", {})])
        say(step="refreshed", tokens=len(storage.history),
            rotated=storage.tokens.refresh_token != first.refresh_token,
            new_access=storage.tokens.access_token != first.access_token,
            boxes=[b["box_id"] for b in structured(listed)["boxes"]])

    # Revoke (RFC 7009) at the endpoint the hub's metadata names, then the token is refused.
    base = urllib.parse.urljoin(args.url, "/")
    with urllib.request.urlopen(base + ".well-known/oauth-authorization-server") as r:
        meta = json.loads(r.read())
    access = storage.tokens.access_token
    data = urllib.parse.urlencode({"token": storage.tokens.refresh_token,
                                   "client_id": storage.client.client_id}).encode()
    with urllib.request.urlopen(meta["revocation_endpoint"], data=data) as r:
        revoked = r.status
    req = urllib.request.Request(args.url, method="POST", data=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {access}"})
    try:
        urllib.request.urlopen(req)
        after = 200
    except urllib.error.HTTPError as e:
        after = e.code
    say(step="revoked", status=revoked, then=after)
    if args.secrets_out:
        with open(args.secrets_out, "w") as f:
            f.write(person.callback[0] + "\n")
            for t in storage.history:
                f.write(t.access_token + "\n")
                if t.refresh_token:
                    f.write(t.refresh_token + "\n")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except BaseException as e:  # noqa: BLE001 - report whatever ended the run
        import traceback
        traceback.print_exc()
        say(step="failed", error=repr(e))
        sys.exit(1)
