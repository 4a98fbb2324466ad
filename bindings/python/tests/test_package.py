"""The package itself: installed location, library loading and the ABI
check, typing marker, leaks, and the VM case."""

from __future__ import annotations

import ast
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

import libbox
from _support import BoxTestCase, deadline, installed


def _import_with(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_overrides)
    return subprocess.run([sys.executable, "-c", "import libbox"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tempfile.gettempdir())


#: The package's modules and the package modules each may import: imports go
#: runtime -> box -> {process, fs} -> {_ffi, _check, errors}, never back.
IMPORT_GRAPH: dict[str, set[str]] = {
    "__init__": {"_ffi", "box", "doctor", "errors", "fs", "process", "runtime"},
    "runtime": {"_check", "_ffi", "box", "errors"},
    "box": {"_check", "_ffi", "errors", "fs", "process"},
    "fs": {"_check", "_ffi"},
    "process": {"_check", "_ffi", "errors"},
    "doctor": {"_ffi"},
    "_ffi": {"errors"},
    "_check": set(),
    "errors": set(),
}


def _package_imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(module, at top level) for every import of a package module in tree,
    including those in functions and ``if TYPE_CHECKING`` blocks."""
    top = {id(n) for n in tree.body}
    out: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("libbox"):
            names = [node.module.split(".")[1]] if "." in node.module else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("libbox.")]
        else:
            continue
        out.extend((n.split(".")[0], id(node) in top) for n in names)
    return out


class PackageTest(unittest.TestCase):
    def test_imports_go_one_way(self) -> None:
        pkg = os.path.dirname(libbox.__file__)
        modules = {f[:-3] for f in os.listdir(pkg) if f.endswith(".py")}
        self.assertEqual(modules, set(IMPORT_GRAPH), "a module was added or removed: place it in IMPORT_GRAPH")
        for mod, allowed in IMPORT_GRAPH.items():
            with open(os.path.join(pkg, mod + ".py"), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for name, at_top in _package_imports(tree):
                with self.subTest(module=mod, imports=name):
                    self.assertIn(name, allowed, f"{mod}.py imports {name}: against the import direction")
                    self.assertTrue(at_top, f"{mod}.py imports {name} inside a function or block (a hidden circle?)")

    def test_imported_from_the_installed_wheel(self) -> None:
        if not installed():
            self.skipTest("source-tree run: `./build.sh test` runs these against the installed wheel")
        pkg = os.path.dirname(libbox.__file__)
        self.assertIn("site-packages", pkg)
        if not os.environ.get("LIBBOX_LIBRARY"):
            self.assertEqual(libbox.library_path, os.path.join(pkg, "_lib", "libbox.so"))

    def test_typed_and_versioned(self) -> None:
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(libbox.__file__), "py.typed")))
        self.assertEqual(libbox.ABI_VERSION, 1)
        self.assertTrue(libbox.library_version())

    def test_doctor(self) -> None:
        with tempfile.TemporaryDirectory() as home:
            r = libbox.doctor(home=home)
        names = {c["name"]: c for c in r["checks"]}
        for want in ("qemu", "qemu-img", "kvm", "kernel", "tun", "userns", "cgroup", "space"):
            self.assertIn(want, names)
        for c in r["checks"]:
            self.assertIn(c["status"], ("ok", "warn", "fail"))
            if c["status"] != "ok":
                self.assertTrue(c.get("fix"), f"{c['name']} is {c['status']} with no fix line")
        self.assertEqual(r["isolation"], "vm")
        self.assertIn("sandbox", r["runs"])
        self.assertEqual(r["ready"], "vm" in r["runs"])
        with self.assertRaises(TypeError):
            libbox.doctor(home="")

    def test_library_override_missing(self) -> None:
        r = _import_with({"LIBBOX_LIBRARY": "/no/such/libbox.so"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ImportError", r.stderr)
        self.assertIn("LIBBOX_LIBRARY=/no/such/libbox.so does not exist", r.stderr)

    def test_library_override_not_libbox(self) -> None:
        libc = next((p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/lib/aarch64-linux-gnu/libm.so.6",
                                 "/usr/lib/libm.so.6") if os.path.exists(p)), None)
        if libc is None:
            self.skipTest("no libm.so.6 found to stand in for a foreign library")
        r = _import_with({"LIBBOX_LIBRARY": libc})
        self.assertIn("is not libbox.so", r.stderr)

    def test_abi_mismatch_is_a_clear_import_error(self) -> None:
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            self.skipTest("no C compiler to build a fake library: install gcc (./build.sh deps does)")
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "fake.c")
            with open(src, "w") as f:
                f.write("#include <stdint.h>\nuint32_t box_abi_version(void) { return 999; }\n")
            so = os.path.join(d, "libfake.so")
            subprocess.run([cc, "-shared", "-fPIC", "-o", so, src], check=True, timeout=60)
            r = _import_with({"LIBBOX_LIBRARY": so})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("has ABI version 999 but this Python package needs 1", r.stderr)


EXIT_SCRIPT = """
import asyncio, libbox

async def main():
    box = await libbox.Box(isolation="sandbox", auto_remove=False).start()
    p = await box.spawn("sleep", "1000", stdin=True)
    asyncio.ensure_future(p.write_stdin(b"x" * (16 << 20)))  # the box never reads it
    await box.spawn("sh", "-c", "sleep 0.2; echo late")  # exits after the loop closed
    await asyncio.sleep(0.5)
    print("leaving")

asyncio.run(main())
"""


class ExitTest(unittest.TestCase):
    def test_interpreter_exits_with_runtime_open(self) -> None:
        with tempfile.TemporaryDirectory() as home:
            r = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], env=dict(os.environ, LIBBOX_HOME=home),
                               capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir())
            self.assertEqual((r.returncode, r.stdout), (0, "leaving\n"), r.stderr)
            self.assertNotIn("Traceback", r.stderr)
            self.assertNotIn("Exception ignored", r.stderr)


class LeakTest(BoxTestCase):
    async def test_no_handles_or_threads_after_close(self) -> None:
        threads = set(threading.enumerate())
        box = await self.sandbox().start()
        got = await self.rt.get(box.id)
        results = await asyncio.gather(*(box.exec("echo", str(i)) for i in range(64)))
        self.assertEqual(len(results), 64)
        p = await box.spawn("cat", stdin=True)
        await p.write_stdin(b"x" * 100_000)  # starts the stdin worker threads
        leftover = await box.spawn("sleep", "1000")  # still running at close
        self.assertGreater(libbox.live_handles(), 0)
        self.rt.close()
        self.assertEqual(libbox.live_handles(), 0)
        self.assertEqual(set(threading.enumerate()), threads)
        for proc in (p, leftover):
            with self.assertRaises(libbox.Error):
                await proc.wait()
        del got


class VMTest(BoxTestCase):
    @deadline(600)
    async def test_vm_box_runs_the_seed_pattern(self) -> None:
        try:
            box = await libbox.Box(isolation="vm", runtime=self.rt).start()
        except (libbox.UnsupportedError, libbox.UnavailableError) as e:
            self.skipTest(f"VM isolation is not available here ({e}); a VM box needs libbox built with "
                          "the QEMU backend plus qemu-system-x86 and a guest kernel (./build.sh deps installs them)")
        try:
            results = await asyncio.gather(*(box.exec("echo", f"task {t}") for t in "ABCD"))
            self.assertEqual([r.stdout for r in results], [f"task {t}\n" for t in "ABCD"])
            self.assertEqual((await box.info())["isolation"], "vm")
        finally:
            await box._cleanup()
