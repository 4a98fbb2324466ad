#!/usr/bin/env python3
"""Builds the libbox wheel with the standard library only.

    python3 build_wheel.py --version 0.1.0 --lib build/lib/libbox.so --out dist

A wheel is a zip of the package plus a ``.dist-info`` directory (METADATA,
WHEEL, RECORD with sha256 digests). The library goes inside the package as
``libbox/_lib/libbox.so``, and the guest kernel kit (``--kernel-kit``: the
kernel and the modules boxes load) as ``libbox/_lib/libbox-kernel/``, where
libbox looks for a kernel beside the loaded library. Entries are sorted and
timestamped 1980-01-01 so the same inputs give the same bytes. This script
never downloads anything.

The platform tag is the manylinux tag that is true of libbox.so: the highest
``GLIBC_2.N`` symbol version it needs, read from its ELF version-needs
section (``manylinux_2_N_<arch>``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import platform
import struct
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
EPOCH = (1980, 1, 1, 0, 0, 0)


ELF_MACHINES = {62: "x86_64", 183: "aarch64"}
SHT_GNU_VERNEED = 0x6FFFFFFE


def elf_glibc_needs(path: str) -> tuple[str, tuple[int, int]]:
    """(wheel arch, highest GLIBC version needed) of a 64-bit little-endian ELF
    shared object, from its SHT_GNU_verneed section."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit(f"build_wheel: {path} is not a 64-bit little-endian ELF file")
    machine = struct.unpack_from("<H", data, 18)[0]
    arch = ELF_MACHINES.get(machine)
    if arch is None:
        raise SystemExit(f"build_wheel: {path}: unsupported ELF machine {machine}")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    best = (0, 0)
    for _name, typ, _flags, _addr, off, _size, link, info, _align, _entsize in sections:
        if typ != SHT_GNU_VERNEED:
            continue
        strtab_off = sections[link][4]
        pos = off
        for _ in range(info):  # Elf64_Verneed entries
            _ver, cnt, _file, aux, nxt = struct.unpack_from("<HHIII", data, pos)
            apos = pos + aux
            for _ in range(cnt):  # Elf64_Vernaux entries
                _hash, _flags2, _other, name, anext = struct.unpack_from("<IHHII", data, apos)
                end = data.index(b"\0", strtab_off + name)
                sym = data[strtab_off + name:end].decode()
                if sym.startswith("GLIBC_2."):
                    parts = sym[len("GLIBC_"):].split(".")
                    if all(p.isdigit() for p in parts):
                        best = max(best, (int(parts[0]), int(parts[1])))
                apos += anext
                if anext == 0:
                    break
            pos += nxt
            if nxt == 0:
                break
    return arch, best


def platform_tag(lib: str) -> str:
    """manylinux_2_N_<arch> for the glibc libbox.so needs (linux_<arch> if it
    needs no versioned glibc symbol, e.g. a static or musl build)."""
    arch, (major, minor) = elf_glibc_needs(lib)
    if major == 0:
        return f"linux_{arch}"
    return f"manylinux_{major}_{minor}_{arch}"


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


def kit_files(kit: str) -> list[tuple[str, str]]:
    """(archive name, source path) of the kernel kit's files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(kit):
        dirnames.sort()
        for f in sorted(filenames):
            src = os.path.join(dirpath, f)
            out.append(("libbox/_lib/libbox-kernel/" + os.path.relpath(src, kit).replace(os.sep, "/"), src))
    return out


def build(version: str, lib: str, out_dir: str, kit: str | None = None) -> str:
    if not os.path.isfile(lib):
        raise SystemExit(f"build_wheel: {lib} does not exist: build libbox.so first (./build.sh build)")
    if kit is not None and not os.path.isdir(kit):
        raise SystemExit(f"build_wheel: kernel kit {kit} does not exist: run ./build.sh build")
    tag = "py3-none-" + platform_tag(lib)
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
    for arc, src in kit_files(kit) if kit else []:
        with open(src, "rb") as f:
            entries.append((arc, f.read(), 0o644))
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
    ap.add_argument("--kernel-kit", help="directory of the guest kernel kit to ship beside libbox.so")
    ap.add_argument("--print-tag", action="store_true", help="print the platform tag of --lib and exit")
    a = ap.parse_args()
    if a.print_tag:
        print(platform_tag(a.lib))
        return 0
    print(build(a.version, a.lib, a.out, a.kernel_kit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
