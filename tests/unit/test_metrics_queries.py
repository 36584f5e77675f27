"""Metrics queries cannot be turned against the cluster: against real HTTP servers on loopback that answer
as a cluster's other services might (a redirect, a page holding a secret, silence, a flood)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from modeldeploy.analysis.http import Limits
from modeldeploy.analysis.prometheus import QueryError, fetch, measure_canary_async, query_url
from modeldeploy.analysis.runner import Measurements
from modeldeploy.api.v1alpha1 import ModelDeployment

from factories import md
from loopback import Servers, reply, vector

SECRET = "AKIA-not-for-your-eyes"
FAST = Limits(connect=1, read=0.5, deadline=1.5)


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as started:
        yield started


def query(address: str, limits: Limits = FAST) -> float | None:
    return asyncio.run(fetch(address, "up", limits))


class TestAnswers:
    def test_a_prometheus_answer_is_read(self, servers: Servers) -> None:
        server = servers.http(reply(200, vector("42")))
        assert query(server.url) == 42.0
        assert server.paths == ["/api/v1/query?query=up"]

    def test_the_path_prefix_of_the_address_is_kept(self) -> None:
        assert query_url("http://p:9090/prometheus/", "up") == "http://p:9090/prometheus/api/v1/query?query=up"

    def test_a_redirect_is_not_followed(self, servers: Servers) -> None:
        target = servers.http(reply(200, json.dumps({"secret": SECRET}).encode()))
        redirecting = servers.http(reply(302, b"", "text/html", Location=f"{target.url}/latest/meta-data/"))
        with pytest.raises(QueryError) as caught:
            query(redirecting.url)
        assert (
            str(caught.value) == f"{redirecting.url} did not answer as a Prometheus API (HTTP 302, text/html, 0 bytes)"
        )
        assert target.paths == []

    @pytest.mark.parametrize(
        ("status", "body", "content_type"),
        [
            (200, json.dumps({"secret": SECRET}).encode(), "application/json"),
            (200, f"<html>{SECRET}</html>".encode(), "text/html"),
            (500, json.dumps({"status": "error", "errorType": "custom", "error": SECRET}).encode(), "application/json"),
            (
                200,
                json.dumps({"status": "success", "data": {"resultType": "matrix", "result": SECRET}}).encode(),
                "application/json",
            ),
        ],
    )
    def test_what_is_not_a_prometheus_answer_is_summarised_never_quoted(
        self, servers: Servers, status: int, body: bytes, content_type: str
    ) -> None:
        server = servers.http(reply(status, body, content_type))
        with pytest.raises(QueryError) as caught:
            query(server.url)
        assert SECRET not in str(caught.value)
        assert f"(HTTP {status}, {content_type}, {len(body)} bytes)" in str(caught.value)

    def test_a_prometheus_error_is_quoted_short(self, servers: Servers) -> None:
        error = "parse error at char 5: " + "x" * 500
        server = servers.http(
            reply(400, json.dumps({"status": "error", "errorType": "bad_data", "error": error}).encode())
        )
        with pytest.raises(QueryError) as caught:
            query(server.url)
        assert str(caught.value) == f"Prometheus at {server.url} refused the query: bad_data: {error[:200]}"

    def test_a_chunked_answer_is_read(self, servers: Servers) -> None:
        def chunked(h: BaseHTTPRequestHandler) -> None:
            h.protocol_version = "HTTP/1.1"
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            body = vector("7")
            for part in (body[:10], body[10:]):
                h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            h.wfile.write(b"0\r\n\r\n")

        assert query(servers.http(chunked).url) == 7.0

    def test_a_flood_is_cut_off(self, servers: Servers) -> None:
        server = servers.http(reply(200, b"[" * (2 << 20)))
        with pytest.raises(QueryError, match="more than 1048576"):
            query(server.url)


class TestBoundedTime:
    def test_a_server_that_says_nothing_times_out(self, servers: Servers) -> None:
        started = time.monotonic()
        with pytest.raises(QueryError, match=r"the server stopped answering for 0\.5s"):
            query(servers.silent().url)
        assert time.monotonic() - started < 2.5

    def test_a_server_that_drips_hits_the_deadline(self, servers: Servers) -> None:
        started = time.monotonic()
        with pytest.raises(QueryError, match=r"no complete answer within 1\.5s"):
            query(servers.silent(drip=0.1).url, Limits(connect=1, read=1, deadline=1.5))
        assert time.monotonic() - started < 3


def analysed(address: str, name: str = "iris") -> ModelDeployment:
    return md(name, rollout={"analysis": {"prometheus": {"address": address}, "interval": "30s", "minRequests": 1}})


class TestMeasurementsOffTheWorkers:
    def test_a_hanging_prometheus_delays_no_other_model_deployment(self, servers: Servers) -> None:
        woken: list[Any] = []
        done = threading.Event()

        def wake(key: Any) -> None:
            woken.append(key)
            done.set()

        async def measure(model: ModelDeployment, revision: str) -> Any:
            return await measure_canary_async(model, revision, FAST)

        runner = Measurements(measure, wake=wake)

        def prometheus(h: BaseHTTPRequestHandler) -> None:
            reply(200, vector("0" if "http_response_code" in h.path else "5"))(h)

        hanging, healthy = analysed(servers.silent().url, "slow"), analysed(servers.http(prometheus).url, "fast")
        started = time.monotonic()
        assert runner.take(("ml", "slow"), hanging, "r1") is None
        assert runner.take(("ml", "fast"), healthy, "r1") is None
        assert time.monotonic() - started < 0.2, "asking never waits for an answer"
        assert done.wait(5)
        assert woken[0] == ("ml", "fast"), "the healthy one is measured while the other one hangs"
        fast = runner.take(("ml", "fast"), healthy, "r1")
        assert fast is not None and fast.verdict == "Passed"
        assert runner.take(("ml", "slow"), hanging, "r1") is None, "still in flight, asked once"
        deadline = time.monotonic() + 5
        while ("ml", "slow") not in woken and time.monotonic() < deadline:
            time.sleep(0.05)
        slow = runner.take(("ml", "slow"), hanging, "r1")
        assert slow is not None and slow.verdict == "Failed"
        assert "could not be queried" in slow.summary
