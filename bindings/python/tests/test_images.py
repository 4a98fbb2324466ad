"""Image management through the library: pull (with progress), list,
remove (refused while in use), and the error classes of bad references."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest

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


# Run in a child process: the library reads LIBBOX_INSECURE_REGISTRIES from
# the environment the process started with. A registry that answers its ping and then holds every
# request; the child pulls, cancels the task, and checks that the library
# dropped the held request.
_CANCEL_CHILD = r'''
import asyncio, http.server, os, select, sys, tempfile, threading
held, gone = threading.Event(), threading.Event()

class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path == "/v2/":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        held.set()
        while True:
            r, _, _ = select.select([self.connection], [], [], 30)
            if not r or not self.connection.recv(1):
                break
        gone.set()

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
host = "127.0.0.1:%d" % srv.server_address[1]
import libbox

async def main():
    with tempfile.TemporaryDirectory() as home:
        rt = libbox.Runtime(home=home)
        try:
            task = asyncio.create_task(rt.pull(host + "/x/y:1", platform="linux/arm64"))
            while not held.is_set():
                await asyncio.sleep(0.01)
                if task.done():
                    print("pull ended before the registry held it:", task.exception())
                    return 1
            task.cancel()
            try:
                await asyncio.wait_for(task, 10)
                print("pull returned")
                return 1
            except asyncio.CancelledError:
                pass
            if not await asyncio.get_running_loop().run_in_executor(None, gone.wait, 10):
                print("the cancelled pull kept its request open")
                return 1
        finally:
            rt.close()
        if libbox.live_handles() != 0:
            print("handles leaked:", libbox.live_handles())
            return 1
    print("OK")
    return 0

sys.exit(asyncio.run(main()))
'''


class PullCancelTest(unittest.TestCase):
    def test_cancelling_the_task_stops_the_download(self) -> None:
        r = subprocess.run([sys.executable, "-c", _CANCEL_CHILD], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, LIBBOX_INSECURE_REGISTRIES="127.0.0.1", LIBBOX_REGISTRY_AUTH="",
                                    LIBBOX_REGISTRY_MIRRORS=""))
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "OK"), r.stderr)


class ImageCommandTest(BoxTestCase):
    async def test_exec_default_platform_prune(self) -> None:
        async with libbox.Box("busybox", isolation="sandbox", runtime=self.rt, platform="linux/amd64") as b:
            # busybox has a Cmd (sh) and no Entrypoint: args replace the Cmd.
            r = await b.exec_default("echo", "from", "image")
            self.assertEqual(r.stdout, "from image\n")
            r = await b.exec_default(stdin="echo from cmd")
            self.assertEqual((r.exit_code, r.stdout), (0, "from cmd\n"))
        img = await self.rt.pull("busybox", platform="linux/amd64")
        self.assertTrue(img.id.startswith("sha256:"))
        rep = await self.rt.prune_images()
        self.assertEqual(sorted(rep), ["blobs", "bytes", "roots"])
        with self.assertRaises(libbox.InvalidArgumentError):
            await self.rt.pull("busybox", platform="nonsense")
