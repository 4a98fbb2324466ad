"""Box networking from Python: the allow-list is enforced on the host, a
published port reaches the box."""

from __future__ import annotations

import socket
import threading
import unittest

import libbox
from _support import BoxTestCase


def host_address() -> str:
    """A non-loopback IPv4 address of this machine (the test servers listen
    there, as the internet would be reached)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # no packet is sent
        return s.getsockname()[0]
    except OSError:
        return ""
    finally:
        s.close()


class NetworkTest(BoxTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.ip = host_address()
        if not self.ip or self.ip.startswith("127."):
            self.skipTest("no non-loopback IPv4 address: bring up an interface with an address")
        self.srv = socket.create_server((self.ip, 0))
        self.port = self.srv.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=False)
        self.thread.start()

    def _serve(self) -> None:
        self.srv.settimeout(0.1)
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with c:
                c.sendall(b"hello from the host\n")

    def tearDown(self) -> None:
        self.stop.set()
        self.thread.join()
        self.srv.close()
        super().tearDown()

    async def test_allow_list_and_ports(self) -> None:
        with self.assertRaises(ValueError):
            libbox.Box(allow_net=["pypi.org"])  # needs network=True
        with self.assertRaises(TypeError):
            libbox.Box(network=True, ports=[("8080",)])
        async with self.sandbox(network=True, allow_net=[f"{self.ip}:{self.port}", "db.test"],
                                hosts={"db.test": self.ip}, ports=[(0, 8080)]) as box:
            r = await box.exec("nc", "-w", "5", "db.test", str(self.port))
            self.assertEqual(r.stdout, "hello from the host\n")
            r = await box.exec("sh", "-c", f"nc -w 5 {self.ip} 1 </dev/null")
            self.assertNotEqual(r.exit_code, 0)
            self.assertIn("refused", r.stderr)
            r = await box.exec("nslookup", "pypi.org")
            self.assertNotEqual(r.exit_code, 0)
            info = await box.info()
            net = info["network"]
            self.assertEqual(net["address"], "192.168.127.2/24")
            self.assertGreaterEqual(net["denied"], 2)
            (port,) = net["ports"]
            self.assertEqual(port["box"], 8080)
            self.assertFalse(port["host"].endswith(":0"))

            # Publish while running: the host port accepts until unpublished.
            m = await box.publish((0, 9090))
            self.assertEqual((m["box"], m["protocol"]), (9090, "tcp"))
            host, _, hport = m["host"].rpartition(":")
            self.assertGreater(int(hport), 0)
            socket.create_connection((host, int(hport)), timeout=5).close()
            self.assertEqual(len((await box.info())["network"]["ports"]), 2)
            await box.unpublish(m["host"])
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection((host, int(hport)), timeout=5).close()
            with self.assertRaises(libbox.NotFoundError):
                await box.unpublish(m["host"])
            with self.assertRaises(ValueError):
                await box.publish({"port": 80})


if __name__ == "__main__":
    unittest.main()
