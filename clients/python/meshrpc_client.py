"""A client of the meshrpc wire protocol (version 2), written from docs/wire.md alone.

Standard library only (asyncio). It speaks the binary mesh protocol to a node's port:
the hello and its answer, request and response frames multiplexed on one connection,
deadlines, cancellation, pings and go-away; arguments and answers in the JSON codec.

    import asyncio, meshrpc_client

    async def main():
        client = await meshrpc_client.connect("127.0.0.1", 11999, name="py")
        print(await client.call("greeter", "greet", {"name": "Max"}))   # Hello, Max
        await client.close()

    asyncio.run(main())

Failures are exceptions: `AppError` (the method's own error type, decoded from JSON),
`MeshError` (meshrpc failed the call: `code` is `timeout`, `unknown_method`, ...), and
`Refused` (the node refused the hello).
"""

import asyncio
import json
import struct

MAGIC = b"MESHRPC"
VERSION = b"2"

# Frame kinds (docs/wire.md, "Frames").
REQUEST, RESPONSE, CANCEL, PING, PONG, GOAWAY = 1, 2, 3, 4, 5, 6
ITEM, END, REQUEST_META, CREDIT, REQUEST_ITEMS, REQUEST_TRACED = 7, 8, 9, 10, 11, 12

# Response status.
OK, APP_ERROR, FAILED, STREAM = 0, 1, 2, 3

CODEC_JSON = 0
HEADER = 4 + 1 + 8  # length u32 | kind u8 | id u64


class MeshError(Exception):
    """meshrpc failed the call: `code` names why, `fields` holds the rest of the JSON."""

    def __init__(self, code, fields=None):
        self.code = code
        self.fields = fields or {}
        super().__init__(f"{code}: {self.fields}" if self.fields else code)


class AppError(Exception):
    """The method returned its error type; `value` is it, decoded from JSON."""

    def __init__(self, value):
        self.value = value
        super().__init__(f"application error: {value!r}")


class Refused(Exception):
    """The node refused the hello (no common version, or it takes TLS only)."""


def frame(kind, call_id, body=b""):
    return struct.pack(">IBQ", 9 + len(body), kind, call_id) + body


def request_body(service, method, payload, deadline_us, trace_id):
    s, m = service.encode(), method.encode()
    if len(s) > 255 or len(m) > 255:
        raise ValueError("service and method names are at most 255 bytes")
    return (
        struct.pack(">BQQ", CODEC_JSON, deadline_us, trace_id)
        + bytes([len(s)]) + s
        + bytes([len(m)]) + m
        + payload
    )


class Client:
    """One connection to a node, carrying any number of concurrent calls."""

    def __init__(self, reader, writer, features, max_out, keepalive=3.0):
        self._reader = reader
        self._writer = writer
        self.features = features
        self.max_out = max_out  # the largest frame the node accepts
        self._next_id = 1
        self._pending = {}
        self._draining = False
        self._closed = None
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._read_loop())
        # A node closes a connection silent for 10 s with no call running: ping every 3 s.
        self._keepalive = loop.create_task(self._ping_loop(keepalive))

    async def call(self, service, method, args=None, timeout=30.0, trace_id=0):
        """Calls `service.method` with `args` (a dict keyed by parameter name); returns
        the decoded answer. `timeout` (seconds, None for none) travels as the deadline."""
        if self._closed is not None:
            raise MeshError("unavailable", {"message": f"connection closed: {self._closed}"})
        if self._draining:
            raise MeshError("unavailable", {"message": "the node is draining (go-away)"})
        payload = json.dumps(args or {}, separators=(",", ":")).encode()
        deadline_us = 0 if timeout is None else max(1, int(timeout * 1_000_000))
        call_id = self._next_id
        self._next_id += 1
        data = frame(REQUEST, call_id, request_body(service, method, payload, deadline_us, trace_id))
        if len(data) - 4 > self.max_out:
            raise MeshError("too_large", {"size": len(data), "limit": self.max_out})
        answer = asyncio.get_running_loop().create_future()
        self._pending[call_id] = answer
        try:
            self._writer.write(data)
            await self._writer.drain()
            if timeout is None:
                status, body = await answer
            else:
                # The node answers `timeout` at the deadline; waiting a little longer
                # than it lets that answer arrive, and covers a node that is silent.
                status, body = await asyncio.wait_for(answer, timeout + 0.5)
        except asyncio.TimeoutError:
            self._cancel(call_id)
            raise MeshError("timeout") from None
        except asyncio.CancelledError:
            # The caller gave up: the node stops the handler.
            self._cancel(call_id)
            raise
        finally:
            self._pending.pop(call_id, None)
        if status == OK:
            return json.loads(body) if body else None
        if status == APP_ERROR:
            raise AppError(json.loads(body))
        if status == FAILED:
            error = json.loads(body)
            code = error.pop("code", "protocol")
            raise MeshError(code, error)
        raise MeshError("protocol", {"message": f"unexpected status {status} (streams are not supported here)"})

    async def ping(self, timeout=5.0):
        """A round trip (ping, pong)."""
        call_id = self._next_id
        self._next_id += 1
        pong = asyncio.get_running_loop().create_future()
        self._pending[call_id] = pong
        try:
            self._writer.write(frame(PING, call_id))
            await self._writer.drain()
            await asyncio.wait_for(pong, timeout)
        finally:
            self._pending.pop(call_id, None)

    def _cancel(self, call_id):
        if self._closed is None:
            self._writer.write(frame(CANCEL, call_id))

    async def _ping_loop(self, every):
        while self._closed is None:
            await asyncio.sleep(every)
            try:
                await self.ping()
            except (MeshError, asyncio.TimeoutError, ConnectionError, OSError):
                return

    async def close(self):
        self._keepalive.cancel()
        self._task.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def _read_loop(self):
        try:
            while True:
                head = await self._reader.readexactly(4)
                (length,) = struct.unpack(">I", head)
                if length < 9:
                    raise MeshError("protocol", {"message": f"frame length {length} is shorter than a header"})
                body = await self._reader.readexactly(length)
                kind, call_id = struct.unpack(">BQ", body[:9])
                rest = body[9:]
                if kind == RESPONSE:
                    waiter = self._pending.get(call_id)
                    # A response for a call we gave up on is ignored.
                    if waiter is not None and not waiter.done():
                        waiter.set_result((rest[0], rest[1:]))
                elif kind == PING:
                    self._writer.write(frame(PONG, call_id))
                elif kind == PONG:
                    waiter = self._pending.get(call_id)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                elif kind == GOAWAY:
                    self._draining = True
                elif kind in (ITEM, END, CREDIT):
                    pass  # streams are not negotiated by this client: never sent to it
                else:
                    raise MeshError("protocol", {"message": f"unknown frame kind {kind}"})
        except asyncio.CancelledError:
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError, MeshError) as e:
            self._closed = e
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(MeshError("unavailable", {"message": f"connection closed: {e}"}))


async def connect(
    host, port, name="python", max_frame=16 * 1024 * 1024, timeout=5.0, versions=(VERSION, VERSION), keepalive=3.0
):
    """Opens a connection to a node and says hello; raises `Refused` if the node refuses.
    `versions` is the (highest, lowest) wire version offered, as ASCII digits; the client
    pings every `keepalive` seconds (a node closes a connection idle for 10 s)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    name_bytes = name.encode()[:255]
    # "MESHRPC" | max_version | min_version | features u32 | max_frame u32 | name_len | name
    # Features: none (no metadata, streams or 128-bit trace context in this client).
    hello = MAGIC + versions[0] + versions[1] + struct.pack(">II", 0, max_frame) + bytes([len(name_bytes)]) + name_bytes
    writer.write(hello)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readexactly(8), timeout)
    if answer[:7] != MAGIC:
        writer.close()
        raise Refused(f"not a meshrpc node (answered {answer!r})")
    if answer[7:8] == b"0":
        # "MESHRPC0" | min_version | max_version | reason_len | reason
        versions = await reader.readexactly(3)
        reason = (await reader.readexactly(versions[2])).decode(errors="replace")
        writer.close()
        raise Refused(reason)
    features, max_out = struct.unpack(">II", await asyncio.wait_for(reader.readexactly(8), timeout))
    return Client(reader, writer, features, max_out, keepalive)
