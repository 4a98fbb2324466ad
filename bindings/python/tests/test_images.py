"""Image management through the library: pull (with progress), list,
remove (refused while in use), and the error classes of bad references."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile

import libbox

from _support import BoxTestCase


def _blob(root: str, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(root, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def make_oci_layout(root: str) -> None:
    """A one-layer OCI image layout (tag "latest") written with the standard library."""
    os.makedirs(os.path.join(root, "blobs", "sha256"))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        body = b"hello from an oci layout\n" * 4096
        info = tarfile.TarInfo("hello.txt")
        info.size = len(body)
        tf.addfile(info, io.BytesIO(body))
    layer_tar = raw.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    layer_digest, layer_size = _blob(root, layer)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
        "config": {"Env": ["PATH=/bin"], "Cmd": ["cat", "/hello.txt"]},
    }).encode()
    config_digest, config_size = _blob(root, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
    }).encode()
    manifest_digest, manifest_size = _blob(root, manifest)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)


class ImagesTest(BoxTestCase):
    async def test_pull_list_remove(self) -> None:
        img = await self.rt.pull("busybox")
        self.assertIsInstance(img, libbox.Image)
        self.assertTrue(img.id.startswith("sha256:"), img)
        self.assertTrue(os.path.isdir(img.root), img.root)
        self.assertIn("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", img.config.env)
        refs = [i.ref for i in await self.rt.images()]
        self.assertIn("busybox", refs)
        box = await self.rt.create(image="busybox", isolation="sandbox")
        with self.assertRaises(libbox.FailedPreconditionError) as cm:
            await self.rt.remove_image("busybox")
        self.assertIn("busybox", str(cm.exception))
        await box.remove()
        box.close()
        await self.rt.remove_image("busybox")
        self.assertNotIn("busybox", [i.ref for i in await self.rt.images()])

    async def test_bad_references(self) -> None:
        with self.assertRaises(libbox.InvalidArgumentError) as cm:
            await self.rt.pull("UPPER/case")
        self.assertIn("UPPER/case", str(cm.exception))
        with self.assertRaises(libbox.NotFoundError):
            await self.rt.pull("oci-layout:/no/such/dir")
        with self.assertRaises(TypeError):
            await self.rt.pull(42)  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            await self.rt.pull("busybox", progress="not callable")  # type: ignore[arg-type]

        async def coro(_p: libbox.PullProgress) -> None:
            pass

        with self.assertRaises(TypeError):
            await self.rt.pull("busybox", progress=coro)  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            libbox.Box("busybox", progress=3)  # type: ignore[arg-type]

    async def test_progress_from_oci_layout(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            make_oci_layout(d)
            events: list[libbox.PullProgress] = []
            img = await self.rt.pull(f"oci-layout:{d}:latest", progress=events.append)
            self.assertTrue(img.id.startswith("sha256:"))
            self.assertEqual(img.config.cmd, ["cat", "/hello.txt"])
            with open(os.path.join(img.root, "hello.txt"), "rb") as f:
                self.assertEqual(f.read(), b"hello from an oci layout\n" * 4096)
            self.assertTrue(events, "no progress events")
            self.assertTrue(any(e.done > 0 for e in events), events)
            self.assertTrue(all(isinstance(e.layer, str) and e.layer for e in events), events)

    async def test_create_reports_progress(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            ref = f"oci-layout:{d}:latest"
            make_oci_layout(d)
            events: list[libbox.PullProgress] = []
            box = await self.rt.create(image=ref, isolation="sandbox", progress=events.append)
            n = len(events)
            try:
                self.assertTrue(any(e.done > 0 for e in events), events)
            finally:
                await box.remove()
                box.close()
            await self.rt.remove_image(ref)
            later: list[libbox.PullProgress] = []
            async with libbox.Box(ref, isolation="sandbox", runtime=self.rt, progress=later.append) as b:
                self.assertIsNotNone(b.id)
            self.assertTrue(any(e.done > 0 for e in later), later)
            self.assertEqual(len(events), n, "progress called after create returned")
