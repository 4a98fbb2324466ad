"""Runtime.warm: the options reach the library, which checks them (the
template build itself is tested in Go, libbox TestVMTemplateStart)."""

from __future__ import annotations

import unittest

import libbox

from _support import BoxTestCase


class WarmTest(BoxTestCase):
    async def test_bad_options(self) -> None:
        with self.assertRaisesRegex(libbox.InvalidArgumentError, "memory 8 MiB"):
            await self.rt.warm("busybox", memory_mib=8)
        with self.assertRaises(TypeError):
            await self.rt.warm("busybox", cpus="2")  # type: ignore[arg-type]
        with self.assertRaises(libbox.NotFoundError):
            await self.rt.warm("oci-layout:/no/such/dir")


if __name__ == "__main__":
    unittest.main()
