"""A deliberately small HTTP/1.1 GET for metrics queries: bounded in time and size, never redirected.

The address a query goes to is written by a ModelDeployment's author, so the client is built not to
be useful for anything else: one GET to the URL it is given (no redirect is followed, no proxy from
the environment is used, no credentials are sent), a connect timeout, a timeout between reads, an
overall deadline, and a cap on the body. It runs on an asyncio loop, so a server that accepts the
connection and then says nothing holds one coroutine, not a thread.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
DEADLINE = 15.0
MAX_BODY = 1 << 20
MAX_HEADER_LINES = 100


class HttpError(Exception):
    """The request could not be made or its answer could not be read; the message says why, never the body."""


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Limits:
    connect: float = CONNECT_TIMEOUT
    read: float = READ_TIMEOUT
    deadline: float = DEADLINE
    max_body: int = MAX_BODY


async def get(url: str, limits: Limits | None = None) -> Answer:
    """GET url; the answer whatever its status (a redirect is an answer like any other)."""
    limits = limits or Limits()
    try:
        return await asyncio.wait_for(_get(url, limits), limits.deadline)
    except TimeoutError as err:
        raise HttpError(f"no complete answer within {limits.deadline:g}s") from err


async def _get(url: str, limits: Limits) -> Answer:
    parts = urlsplit(url)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    context = ssl.create_default_context() if tls else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host if tls else None), limits.connect
        )
    except TimeoutError as err:
        raise HttpError(f"could not connect within {limits.connect:g}s") from err
    except (OSError, ssl.SSLError) as err:
        raise HttpError(f"could not connect: {err.strerror or err}") from err
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rsplit("@", 1)[-1]
        request = f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        writer.write(request.encode("ascii"))
        await writer.drain()
        return await _read_answer(reader, limits)
    except (OSError, ssl.SSLError) as err:
        raise HttpError(f"the connection failed: {err.strerror or err}") from err
    finally:
        writer.close()


async def _line(reader: asyncio.StreamReader, limits: Limits) -> bytes:
    try:
        return await asyncio.wait_for(reader.readline(), limits.read)
    except TimeoutError as err:
        raise HttpError(f"the server stopped answering for {limits.read:g}s") from err
    except ValueError as err:  # a line beyond the stream's limit
        raise HttpError("the answer's headers are too long") from err


async def _read(reader: asyncio.StreamReader, size: int, limits: Limits) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(size), limits.read)
    except TimeoutError as err:
        raise HttpError(f"the server stopped answering for {limits.read:g}s") from err


async def _read_answer(reader: asyncio.StreamReader, limits: Limits) -> Answer:
    status_line = (await _line(reader, limits)).decode("latin-1").split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
        raise HttpError("the server did not answer in HTTP")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        line = (await _line(reader, limits)).decode("latin-1").strip()
        if not line:
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise HttpError("the answer has too many headers")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _chunked(reader, limits)
    else:
        body = await _until_end(reader, limits, headers.get("content-length"))
    return Answer(int(status_line[1]), headers.get("content-type", ""), body)


async def _until_end(reader: asyncio.StreamReader, limits: Limits, length: str | None) -> bytes:
    wanted = int(length) if length and length.isdigit() else None
    if wanted is not None and wanted > limits.max_body:
        raise HttpError(f"the answer is {wanted} bytes, more than {limits.max_body}")
    body = bytearray()
    while wanted is None or len(body) < wanted:
        chunk = await _read(reader, 65536, limits)
        if not chunk:
            break
        body += chunk
        if len(body) > limits.max_body:
            raise HttpError(f"the answer is more than {limits.max_body} bytes")
    return bytes(body)


async def _chunked(reader: asyncio.StreamReader, limits: Limits) -> bytes:
    body = bytearray()
    while True:
        size_line = (await _line(reader, limits)).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as err:
            raise HttpError("the answer's chunked encoding is broken") from err
        if size == 0:
            return bytes(body)
        if len(body) + size > limits.max_body:
            raise HttpError(f"the answer is more than {limits.max_body} bytes")
        while size > 0:
            chunk = await _read(reader, size, limits)
            if not chunk:
                raise HttpError("the answer ended inside a chunk")
            body += chunk
            size -= len(chunk)
        await _line(reader, limits)  # the chunk's CRLF
