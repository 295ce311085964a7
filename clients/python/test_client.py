"""Tests of the Python client against a real node (`labnode`, serving `lab` and
`greeter`): MESHRPC_NODE=host:port. Run by the Rust test `tests/tests/python_client.rs`,
or by hand: MESHRPC_NODE=127.0.0.1:11999 python3 -m unittest -v test_client"""

import asyncio
import os
import socket
import struct
import unittest

import meshrpc_client
from meshrpc_client import AppError, MeshError, Refused


def node():
    host, port = os.environ["MESHRPC_NODE"].rsplit(":", 1)
    return host, int(port)


class ClientTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.client = await meshrpc_client.connect(*node(), name="python-test")

    async def asyncTearDown(self):
        await self.client.close()

    async def test_calls_the_greeter(self):
        self.assertEqual(await self.client.call("greeter", "greet", {"name": "Max"}), "Hello, Max")
        # Many calls at once on the one connection.
        names = [f"n{i}" for i in range(50)]
        answers = await asyncio.gather(*(self.client.call("greeter", "greet", {"name": n}) for n in names))
        self.assertEqual(answers, [f"Hello, {n}" for n in names])

    async def test_typed_application_errors(self):
        with self.assertRaises(AppError) as caught:
            await self.client.call("lab", "refuse", {"reason": "not today"})
        self.assertEqual(caught.exception.value, {"Refused": "not today"})

    async def test_meshrpc_failures_have_codes(self):
        with self.assertRaises(MeshError) as caught:
            await self.client.call("greeter", "shout", {"name": "x"})
        self.assertEqual(caught.exception.code, "unknown_method")
        self.assertEqual(caught.exception.fields, {"service": "greeter", "method": "shout"})
        with self.assertRaises(MeshError) as caught:
            await self.client.call("nobody", "greet", {})
        self.assertEqual(caught.exception.code, "unknown_service")
        with self.assertRaises(MeshError) as caught:
            await self.client.call("greeter", "greet", {"name": 5})
        self.assertEqual(caught.exception.code, "bad_request")
        self.assertIn("name", caught.exception.fields["message"])
        # The connection serves on after each of them.
        self.assertEqual(await self.client.call("greeter", "greet", {"name": "Ada"}), "Hello, Ada")

    async def test_the_deadline_travels_and_times_out(self):
        with self.assertRaises(MeshError) as caught:
            await self.client.call("lab", "sleep", {"millis": 5000}, timeout=0.2)
        self.assertEqual(caught.exception.code, "timeout")
        left = await self.client.call("lab", "deadline_left", {}, timeout=2.0)
        self.assertTrue(0 < left <= 2000, left)
        self.assertIsNone(await self.client.call("lab", "deadline_left", {}, timeout=None))

    async def test_cancelling_a_call_stops_its_handler(self):
        before = await self.client.call("lab", "stats", {})
        task = asyncio.create_task(self.client.call("lab", "sleep", {"millis": 5000}, timeout=None))
        await asyncio.sleep(0.3)
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        for _ in range(50):
            after = await self.client.call("lab", "stats", {})
            if after["dropped"] > before["dropped"]:
                break
            await asyncio.sleep(0.05)
        self.assertEqual(after["dropped"], before["dropped"] + 1, "the node dropped the cancelled handler")
        self.assertEqual(after["finished"], before["finished"])

    async def test_ping(self):
        await self.client.ping()

    async def test_an_answer_too_large_for_the_caller_fails_that_call_alone(self):
        small = await meshrpc_client.connect(*node(), name="python-small", max_frame=1024)
        try:
            with self.assertRaises(MeshError) as caught:
                await small.call("lab", "blob", {"len": 5000})
            self.assertEqual(caught.exception.code, "too_large")
            self.assertEqual(len(await small.call("lab", "blob", {"len": 100})), 100)
        finally:
            await small.close()

    async def test_a_caller_without_a_common_version_is_refused(self):
        host, port = node()
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"MESHRPC" + b"9" + b"9" + struct.pack(">II", 0, 1 << 20) + b"\x00")
            answer = s.recv(4096)
        self.assertEqual(answer[:8], b"MESHRPC0")
        reason = answer[11:11 + answer[10]].decode()
        self.assertIn("no common wire version", reason)


class HelloTest(unittest.IsolatedAsyncioTestCase):
    async def test_the_hello_settles_features_and_limits(self):
        client = await meshrpc_client.connect(*node(), max_frame=4096)
        try:
            self.assertEqual(client.features, 0, "this client offers no optional feature")
            self.assertGreater(client.max_out, 4096)
        finally:
            await client.close()

    async def test_a_hello_with_no_common_version_raises_refused(self):
        with self.assertRaises(Refused) as caught:
            await meshrpc_client.connect(*node(), versions=(b"9", b"3"))
        self.assertIn("no common wire version", str(caught.exception))

    async def test_an_idle_connection_is_kept_alive_by_pings(self):
        client = await meshrpc_client.connect(*node(), keepalive=0.5)
        try:
            # labnode runs with --idle-ms 1500 in the Rust test: without pings this would close.
            await asyncio.sleep(float(os.environ.get("MESHRPC_IDLE_WAIT", "0")))
            self.assertEqual(await client.call("greeter", "greet", {"name": "Idle"}), "Hello, Idle")
        finally:
            await client.close()


if __name__ == "__main__":
    unittest.main()
