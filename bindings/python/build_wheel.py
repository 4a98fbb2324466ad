#!/usr/bin/env python3
"""Builds the libbox wheel with the standard library only.

    python3 build_wheel.py --version 0.1.0 --lib build/lib/libbox.so --out dist

A wheel is a zip of the package plus a ``.dist-info`` directory (METADATA,
WHEEL, RECORD with sha256 digests). The library goes inside the package as
``libbox/_lib/libbox.so``. Entries are sorted and timestamped 1980-01-01 so
the same inputs give the same bytes. This script never downloads anything.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import platform
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
EPOCH = (1980, 1, 1, 0, 0, 0)


def platform_tag() -> str:
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"linux_{machine}"


def package_files() -> list[tuple[str, str]]:
    """(archive name, source path) of every file of the package."""
    out = []
    root = os.path.join(HERE, "libbox")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "_lib"))
        for f in sorted(filenames):
            if f.endswith((".py", ".typed")):
                src = os.path.join(dirpath, f)
                out.append((os.path.relpath(src, HERE).replace(os.sep, "/"), src))
    return out


def metadata(version: str) -> str:
    readme = ""
    p = os.path.join(HERE, "README.md")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            readme = f.read()
    return (
        "Metadata-Version: 2.1\n"
        "Name: libbox\n"
        f"Version: {version}\n"
        "Summary: Run commands in isolated Linux boxes (micro-VMs or namespace sandboxes) from asyncio\n"
        "Requires-Python: >=3.9\n"
        "Classifier: Framework :: AsyncIO\n"
        "Classifier: Operating System :: POSIX :: Linux\n"
        "Classifier: Typing :: Typed\n"
        "Description-Content-Type: text/markdown\n"
        "\n" + readme
    )


def wheel_file(tag: str) -> str:
    return (
        "Wheel-Version: 1.0\n"
        "Generator: libbox build_wheel.py\n"
        "Root-Is-Purelib: false\n"
        f"Tag: {tag}\n"
    )


def digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build(version: str, lib: str, out_dir: str) -> str:
    if not os.path.isfile(lib):
        raise SystemExit(f"build_wheel: {lib} does not exist: build libbox.so first (./build.sh build)")
    tag = "py3-none-" + platform_tag()
    name = f"libbox-{version}-{tag}.whl"
    dist_info = f"libbox-{version}.dist-info"
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    tmp = path + ".tmp"
    entries: list[tuple[str, bytes, int]] = []
    for arc, src in package_files():
        with open(src, "rb") as f:
            entries.append((arc, f.read(), 0o644))
    with open(lib, "rb") as f:
        entries.append(("libbox/_lib/libbox.so", f.read(), 0o755))
    entries.append((f"{dist_info}/METADATA", metadata(version).encode(), 0o644))
    entries.append((f"{dist_info}/WHEEL", wheel_file(tag).encode(), 0o644))
    record = "".join(f"{arc},{digest(data)},{len(data)}\n" for arc, data, _ in entries)
    record += f"{dist_info}/RECORD,,\n"
    entries.append((f"{dist_info}/RECORD", record.encode(), 0o644))
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for arc, data, mode in entries:
            info = zipfile.ZipInfo(arc, EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, data)
    os.replace(tmp, path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    ap.add_argument("--version", required=True)
    ap.add_argument("--lib", required=True, help="path of the built libbox.so")
    ap.add_argument("--out", required=True, help="output directory")
    a = ap.parse_args()
    print(build(a.version, a.lib, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
