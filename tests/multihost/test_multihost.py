"""Multi-host suite: one hub and two spokes (edge-1, edge-2) as containers of the static binary on a
private network, each scenario asserting what a chatbot would see over MCP and printing how long
detection and recovery took. Run with `make test-multihost`.

The scenarios share one cluster and run in file order (later ones build on earlier state).
"""

from __future__ import annotations

import concurrent.futures
import re
import shutil
import time

import pytest

from cluster import BOX_IMAGE, Cluster, docker, wait_for

HEARTBEAT = 1  # seconds; dead-peer detection is 3 heartbeats
DETECT_LIMIT = 3 * HEARTBEAT + 2  # 3 heartbeats, plus the poll interval and one MCP round trip
BACKOFF_CAP = 30 * 1.2 + 10  # the spoke's backoff cap with jitter, plus a reconnect


def timing(what: str, seconds: float) -> None:
    print(f"\n  [timing] {what}: {seconds:.2f}s", flush=True)


@pytest.fixture(scope="module")
def cluster():
    assert shutil.which("docker"), "the multi-host suite needs the docker CLI"
    docker("info")  # fails loudly when the daemon is down
    images = docker("images", "-q", "llmbox:test").stdout.strip()
    assert images, "image llmbox:test missing: run `make image-test` (make test-multihost does)"
    assert docker("images", "-q", BOX_IMAGE).stdout.strip(), f"{BOX_IMAGE} missing: run `make test-image`"
    c = Cluster(heartbeat_s=HEARTBEAT)
    try:
        c.start()
        yield c
    finally:
        c.close()


def activation_path(result) -> str:
    url = result.structured.get("auth_url", "")
    assert "/auth/" in url, result.structured
    return url[url.index("/auth/"):]


def test_both_spokes_enroll_and_boxes_land_on_each(cluster: Cluster):
    for spoke in ("edge-1", "edge-2"):
        cluster.start_spoke(spoke, cluster.token(spoke))
    _, took = wait_for(
        "both spokes connected", lambda: cluster.connected("edge-1") and cluster.connected("edge-2"), 30
    )
    timing("both spokes enrolled and connected", took)

    for spoke, box in (("edge-1", "mh-one"), ("edge-2", "mh-two")):
        res = cluster.call("create_llmbox", {"box_id": box, "spoke": cluster.namespace(spoke)})
        assert not res.is_error, res.text
        cluster.pages = getattr(cluster, "pages", {})
        cluster.pages[box] = activation_path(res)

    res = cluster.call("list_llmboxes")
    assert not res.is_error, res.text
    where = {b["box_id"]: b["spoke"] for b in res.structured["boxes"]}
    assert where.get("mh-one") == cluster.namespace("edge-1"), where
    assert where.get("mh-two") == cluster.namespace("edge-2"), where

    # Activate mh-two so later scenarios have a ready box to ask about.
    status, body = cluster.http_post_form(cluster.pages["mh-two"], {"code": "good-code"})
    assert status == 200 and "session_" in body, body
    res = cluster.call("get_llmbox", {"box_id": "mh-two"})
    assert res.structured.get("status") == "ready", res.structured


def test_partition_is_detected_and_heals_by_itself(cluster: Cluster):
    edge1 = cluster.spokes["edge-1"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(
            cluster.call, "exec_llmbox", {"box_id": "mh-one", "command": "sleep 600"}, 200
        )
        time.sleep(1.0)  # let the exec reach the spoke
        cut = time.monotonic()
        docker("network", "disconnect", cluster.net, edge1)
        _, took = wait_for("edge-1 disconnected", lambda: not cluster.connected("edge-1"), 30)
        timing("partition detected (list_spokes shows edge-1 away)", took)
        assert took <= DETECT_LIMIT, f"detection took {took:.1f}s, more than 3 heartbeats"

        res = in_flight.result(timeout=120)
        failed_after = time.monotonic() - cut
        timing("in-flight exec on edge-1 failed after the cut", failed_after)
        assert res.is_error, res
        assert "edge-1" in res.text or "disconnect" in res.text.lower(), res.text

    res = cluster.call("exec_llmbox", {"box_id": "mh-two", "command": "echo still-here"})
    assert not res.is_error and "still-here" in res.structured.get("stdout", ""), res

    res = cluster.call("get_llmbox", {"box_id": "mh-one"})
    assert res.is_error or res.structured.get("status") in ("pending", "error"), res

    healed = time.monotonic()
    docker("network", "connect", "--alias", "edge-1", cluster.net, edge1)
    _, took = wait_for("edge-1 reconnected", lambda: cluster.connected("edge-1"), BACKOFF_CAP, interval=0.5)
    timing("edge-1 back after the network returned", time.monotonic() - healed)

    res = cluster.call("exec_llmbox", {"box_id": "mh-one", "command": "echo back"})
    assert not res.is_error and "back" in res.structured.get("stdout", ""), res
    res = cluster.call("get_llmbox", {"box_id": "mh-one"})
    assert not res.is_error and res.structured.get("status") == "pending", res


def test_hub_crash_loses_nothing_acknowledged(cluster: Cluster):
    before = cluster.state_file()
    # Traffic while the hub dies: list calls in a loop on another thread.
    stop = time.monotonic() + 3
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        def traffic():
            n = 0
            while time.monotonic() < stop:
                try:
                    cluster.call("list_llmboxes", timeout=10)
                    n += 1
                except Exception:
                    pass
            return n

        fut = pool.submit(traffic)
        time.sleep(1)
        docker("kill", cluster.hub)
        fut.result()

    after_kill = cluster.state_file()
    assert {s["name"] for s in after_kill["spokes"]} >= {s["name"] for s in before["spokes"]}
    assert {s["box_id"] for s in after_kill["sessions"]} >= {s["box_id"] for s in before["sessions"]}

    t0 = time.monotonic()
    cluster.start_hub()
    _, _ = wait_for(
        "both spokes reconnected with saved credentials",
        lambda: cluster.connected("edge-1") and cluster.connected("edge-2"),
        BACKOFF_CAP,
        interval=0.5,
    )
    timing("hub restart → both spokes reconnected", time.monotonic() - t0)

    res = cluster.call("get_llmbox", {"box_id": "mh-two"})
    assert not res.is_error and res.structured.get("status") == "ready", res
    assert res.structured.get("session_url", "").startswith("https://claude.ai/code/session_"), res

    # A pending activation link handed out before the crash still activates its box.
    status, body = cluster.http_get(cluster.pages["mh-one"])
    assert status == 200 and 'id="activate"' in body, (status, body[:300])
    status, body = cluster.http_post_form(cluster.pages["mh-one"], {"code": "good-code"})
    assert status == 200 and 'id="session-url"' in body, (status, body[:300])
    res = cluster.call("get_llmbox", {"box_id": "mh-one"})
    assert not res.is_error and res.structured.get("status") == "ready", res


def test_spoke_restart_reconnects_without_a_token(cluster: Cluster):
    edge2 = cluster.spokes["edge-2"]
    t0 = time.monotonic()
    docker("restart", "-t", "5", edge2)
    wait_for("edge-2 reconnected", lambda: cluster.connected("edge-2"), BACKOFF_CAP, interval=0.5)
    timing("edge-2 container restart → connected", time.monotonic() - t0)
    res = cluster.call("exec_llmbox", {"box_id": "mh-two", "command": "echo alive"})
    assert not res.is_error and "alive" in res.structured.get("stdout", ""), res


def test_frozen_spoke_is_declared_dead_and_recovers(cluster: Cluster):
    edge1 = cluster.spokes["edge-1"]
    docker("pause", edge1)
    try:
        _, took = wait_for("paused edge-1 declared dead", lambda: not cluster.connected("edge-1"), 30)
        timing("half-open (docker pause) detected", took)
        assert took <= DETECT_LIMIT, f"detection took {took:.1f}s"
        t0 = time.monotonic()
        res = cluster.call("exec_llmbox", {"box_id": "mh-one", "command": "echo x"}, timeout=60)
        timing("exec on the frozen spoke answered", time.monotonic() - t0)
        assert res.is_error, res
    finally:
        docker("unpause", edge1, check=False)
    _, took = wait_for("edge-1 recovered", lambda: cluster.connected("edge-1"), BACKOFF_CAP, interval=0.5)
    timing("unpaused edge-1 reconnected", took)


def test_one_token_enrolls_exactly_one_spoke_and_expired_tokens_fail(cluster: Cluster):
    token = cluster.token("edge-3")
    a = cluster.start_spoke("edge-3", token, suffix="-a")
    b = cluster.start_spoke("edge-3", token, suffix="-b")

    def exited(name):
        state = docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", name).stdout.split()
        return None if state[0] == "true" else int(state[1])

    (loser, code), took = wait_for(
        "one of the two spokes to be rejected",
        lambda: next(((n, exited(n)) for n in (a, b) if exited(n) is not None), None),
        30,
    )
    timing("duplicate token use rejected", took)
    assert code == 3, cluster.logs(loser)
    assert "enroll" in cluster.logs(loser).lower()
    winner = b if loser == a else a
    assert exited(winner) is None, cluster.logs(winner)
    wait_for("the winner connected", lambda: cluster.connected("edge-3"), 30)
    docker("rm", "-f", winner)

    expired = cluster.token("edge-4", ttl="1s")
    time.sleep(2.5)
    late = cluster.start_spoke("edge-4", expired)
    code, _ = wait_for("expired-token spoke to exit", lambda: exited(late), 30)
    assert code == 3, cluster.logs(late)


def test_revocation_closes_the_socket_and_keeps_the_boxes(cluster: Cluster):
    edge2 = cluster.spokes["edge-2"]
    for spoke, box in (("edge-2", "mh-three"), ("edge-1", "mh-four")):
        res = cluster.call("create_llmbox", {"box_id": box, "spoke": cluster.namespace(spoke)})
        assert not res.is_error, res.text

    t0 = time.monotonic()
    cluster.hub_cli("spoke", "revoke", "--name", cluster.namespace("edge-2"))
    _, took = wait_for("revoked edge-2 away", lambda: cluster.namespace("edge-2") not in cluster.spoke_status(), 30)
    timing("revocation → socket closed", took)
    assert took <= HEARTBEAT + 2, f"revocation took {took:.1f}s, more than one heartbeat"

    code = int(docker("wait", edge2, timeout=60).stdout.strip())
    timing("revoked spoke process exited", time.monotonic() - t0)
    logs = cluster.logs(edge2)
    assert code == 3, logs
    assert re.search(r"enroll again", logs, re.I), logs
    res = cluster.call("get_llmbox", {"box_id": "mh-two"})
    assert res.is_error, res  # its spoke is gone: a clear error, not a hang

    # The hub again, now reaping pending boxes after 2 s: edge-1's pending box goes, the revoked
    # spoke's boxes (pending or ready) stay on their host, out of the hub's reach.
    docker("rm", "-f", cluster.hub)
    cluster.create_hub("--reap-interval", "1s", "--auth-ttl", "2s")
    cluster.start_hub()
    wait_for("edge-1 back", lambda: cluster.connected("edge-1"), BACKOFF_CAP, interval=0.5)
    _, took = wait_for(
        "the reaper to take edge-1's pending box",
        lambda: cluster.call("get_llmbox", {"box_id": "mh-four"}).is_error,
        30,
    )
    timing("hub reaper removed a pending box on a live spoke", took)
    ns = cluster.namespace("edge-2")
    left = docker("ps", "--format", '{{.Label "com.llmbox.box-id"}}', "--filter", f"label=com.llmbox.namespace={ns}")
    assert sorted(left.stdout.split()) == ["mh-three", "mh-two"], left.stdout
