"""Runtime options: each keyword reaches the library (which checks it), and
each one left None takes its LIBBOX_* variable as os.environ has it when the
runtime opens (not as it was when the library was loaded)."""

from __future__ import annotations

import os
import shutil
import tempfile
import unittest
from typing import Any
from unittest import mock

import libbox


class RuntimeOptionsTest(unittest.TestCase):
    def setUp(self) -> None:
        self.home = tempfile.mkdtemp(prefix="libbox-py-rtopts-")
        self.addCleanup(shutil.rmtree, self.home, ignore_errors=True)

    def open(self, **kw: Any) -> None:
        libbox.Runtime(home=self.home, **kw).close()

    def test_good_options_open(self) -> None:
        self.open(boot_timeout=2.5, accel="tcg", vm_debug=True, registry_auth="ghcr.io=u:p",
                  insecure_registries="r.local:5000", registry_mirrors="docker.io=m.local")
        self.open(boot_timeout="2m")

    def test_bad_options(self) -> None:
        rows: list[tuple[str, dict[str, Any], type, str]] = [
            ("accel type", {"accel": 1}, TypeError, "accel"),
            ("timeout text", {"boot_timeout": "soon"}, libbox.InvalidArgumentError, "boot_timeout"),
            ("timeout bool", {"boot_timeout": True}, TypeError, "timeout"),
            ("timeout negative", {"boot_timeout": -1}, ValueError, "positive"),
            ("vm_debug text", {"vm_debug": "yes"}, TypeError, "vm_debug"),
            ("auth", {"registry_auth": "ghcr.io"}, libbox.InvalidArgumentError, "LIBBOX_REGISTRY_AUTH"),
            ("mirrors", {"registry_mirrors": "docker.io"}, libbox.InvalidArgumentError, "LIBBOX_REGISTRY_MIRRORS"),
            ("kernel bytes", {"kernel": b"/k"}, TypeError, "kernel"),
        ]
        for what, kw, exc, msg in rows:
            with self.subTest(what):
                with self.assertRaisesRegex(exc, msg):
                    self.open(**kw)

    def test_environment_read_at_open(self) -> None:
        # Set after the library was loaded: only the binding can pass it on.
        with mock.patch.dict(os.environ, {"LIBBOX_BOOT_TIMEOUT": "never"}):
            with self.assertRaisesRegex(libbox.InvalidArgumentError, 'boot timeout "never"'):
                self.open()
            self.open(boot_timeout=5)  # an explicit option wins
        with mock.patch.dict(os.environ, {"LIBBOX_REGISTRY_MIRRORS": "docker.io"}):
            with self.assertRaisesRegex(libbox.InvalidArgumentError, "LIBBOX_REGISTRY_MIRRORS"):
                self.open()


if __name__ == "__main__":
    unittest.main()
