"""Snapshots through the Python binding: snapshot a running box, clone it
(from_ and Box.clone), diverge, list, removal refused while in use,
restore, export and run the exported image."""

from __future__ import annotations

import os
import tempfile

import libbox

from _support import BoxTestCase


class SnapshotTest(BoxTestCase):
    deadline = 240.0

    async def test_snapshot_clone_restore_export(self) -> None:
        async with self.sandbox(name="src", auto_remove=False) as box:
            await box.fs.write("/root/f", "v1\n")
            snap = await box.snapshot("v1")
            self.assertEqual((snap["name"], snap["box"]), ("v1", box.id))
            with self.assertRaises(libbox.AlreadyExistsError):
                await box.snapshot("v1")
            with self.assertRaises(libbox.UnsupportedError):
                await box.snapshot("mem", memory=True)

            async with libbox.Box(from_="v1", runtime=self.rt) as clone:
                self.assertEqual((await clone.info())["isolation"], "sandbox")
                self.assertEqual(await clone.fs.read_text("/root/f"), "v1\n")
                await clone.fs.write("/root/only-clone", "c\n")
                self.assertFalse(await box.fs.exists("/root/only-clone"))
                [listed] = await self.rt.snapshots()
                self.assertEqual(listed["name"], "v1")
                self.assertIn(f"box {clone.id}", listed["used_by"])
                with self.assertRaises(libbox.FailedPreconditionError):
                    await self.rt.remove_snapshot("v1")
                with tempfile.TemporaryDirectory() as d:
                    ref = await clone.export(os.path.join(d, "img"))
                    self.assertEqual(ref, "oci-layout:" + os.path.join(d, "img"))
                    async with self.sandbox(image=ref) as exported:
                        self.assertEqual(await exported.fs.read_text("/root/only-clone"), "c\n")

            # Box.clone: a hidden snapshot of the running box.
            async with box.clone() as twin:
                self.assertEqual(await twin.fs.read_text("/root/f"), "v1\n")

            await box.fs.write("/root/f", "v2\n")
            with self.assertRaises(libbox.FailedPreconditionError):
                await box.restore("v1")
            await box.stop()
            await box.restore("v1")
            await box.start()
            self.assertEqual(await box.fs.read_text("/root/f"), "v1\n")
        with self.assertRaises(libbox.FailedPreconditionError):
            await self.rt.remove_snapshot("v1")  # src sits on it since the restore
        await self.rt.remove("src", force=True)
        await self.rt.remove_snapshot("v1")
        self.assertEqual(await self.rt.snapshots(), [])
        with self.assertRaises(libbox.NotFoundError):
            await self.rt.remove_snapshot("v1")
