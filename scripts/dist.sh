# scripts/dist.sh — the release tarball and the install tests of every package.
#
# build: dist/libbox-<version>-linux-<arch>.tar.gz, relocatable:
#   bin/box  lib/libbox.so  lib/libbox-kernel/  lib/pkgconfig/libbox.pc  include/libbox.h
# test:  from a temp dir with no repo and no LIBBOX_* variables, installs each
#   package the way its users do (the wheel in a fresh venv, the npm tarball in
#   a fresh directory, the tarball unpacked and built against with pkg-config)
#   and runs a VM box and a sandbox box with no other step.
# Sourced by build.sh.
COMPONENTS+=(dist)

dist_arch() {
	case "$(uname -m)" in
	x86_64) echo amd64 ;;
	aarch64) echo arm64 ;;
	*) uname -m ;;
	esac
}

dist_tarball() { echo "$ROOT/dist/libbox-$VERSION-linux-$(dist_arch).tar.gz"; }

dist_build() {
	local name="libbox-$VERSION-linux-$(dist_arch)" stage="$BUILD/dist" out
	out="$(dist_tarball)"
	[ -d "$KERNEL_KIT" ] || die "dist: kernel kit $KERNEL_KIT missing (the vm component builds it)"
	log "building $(basename "$out")"
	rm -rf "$stage"
	mkdir -p "$stage/$name"/{bin,lib/pkgconfig,include} "$ROOT/dist"
	install -m 0755 "$BUILD/bin/box" "$stage/$name/bin/box"
	install -m 0755 "$BUILD/lib/libbox.so" "$stage/$name/lib/libbox.so"
	cp -a "$KERNEL_KIT" "$stage/$name/lib/libbox-kernel"
	install -m 0644 "$ROOT/include/libbox.h" "$stage/$name/include/libbox.h"
	# pkg-config's ${pcfiledir} makes the prefix follow the unpacked tree.
	# shellcheck disable=SC2016
	sed -e 's|@PREFIX@|${pcfiledir}/../..|; s|@INCLUDE@|${prefix}/include|; s|@VERSION@|'"$VERSION"'|' \
		"$ROOT/scripts/libbox.pc.in" >"$stage/$name/lib/pkgconfig/libbox.pc"
	rm -f "$ROOT"/dist/libbox-*-linux-*.tar.gz
	tar -C "$stage" --owner=0 --group=0 --numeric-owner --sort=name --mtime=@0 -czf "$out.tmp" "$name"
	mv "$out.tmp" "$out"
}

# dist_clean_env CMD...: runs CMD with no LIBBOX_* variable and no repo paths.
dist_clean_env() {
	env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" TMPDIR="${TMPDIR:-/tmp}" LANG=C.UTF-8 "$@"
}

dist_test() {
	local tmp rc=0
	tmp="$(mktemp -d "${TMPDIR:-/tmp}/libbox-install.XXXXXX")"
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" RETURN
	log "dist: install tests (wheel, npm tarball, release tarball) from $tmp"
	dist_test_tarball "$tmp" || rc=1
	dist_test_wheel "$tmp" || rc=1
	dist_test_npm "$tmp" || rc=1
	[ "$rc" -eq 0 ] || die "dist: install tests failed"
}

dist_test_tarball() {
	local tmp="$1" home="$1/home-c" top
	mkdir -p "$tmp/c" "$home"
	tar -C "$tmp/c" -xzf "$(dist_tarball)"
	top="$(echo "$tmp"/c/libbox-*)"
	cp "$ROOT/examples/c/concurrent.c" "$tmp/c/"
	# shellcheck disable=SC2046
	(cd "$tmp/c" && dist_clean_env sh -c 'cc -O2 -Wall -o concurrent concurrent.c $(PKG_CONFIG_PATH='"$top"'/lib/pkgconfig pkg-config --cflags --libs libbox) -lpthread') ||
		{ echo "dist: building examples/c/concurrent.c against the release tarball failed" >&2; return 1; }
	local iso
	for iso in vm sandbox; do
		(cd "$tmp/c" && dist_clean_env HOME="$home" LIBBOX_ISOLATION="$iso" timeout -k 5 300 ./concurrent) >"$tmp/c/out-$iso" 2>&1 ||
			{ echo "dist: release tarball: concurrent.c on a $iso box failed:" >&2; cat "$tmp/c/out-$iso" >&2; return 1; }
	done
	local box=(dist_clean_env HOME="$home" timeout -k 5 300 "$top/bin/box")
	if ! { "${box[@]}" create --name kit-check busybox && "${box[@]}" start kit-check &&
		"${box[@]}" exec kit-check echo tarball-cli-ok && "${box[@]}" inspect kit-check; } >"$tmp/c/out-cli" 2>&1; then
		echo "dist: release tarball: bin/box create/start/exec/inspect (VM) failed:" >&2
		cat "$tmp/c/out-cli" >&2
		"${box[@]}" rm -f kit-check >/dev/null 2>&1
		return 1
	fi
	"${box[@]}" rm -f kit-check >/dev/null 2>&1
	grep -q tarball-cli-ok "$tmp/c/out-cli" && grep -q "\"$top/lib/libbox-kernel/" "$tmp/c/out-cli" ||
		{ echo "dist: release tarball: the VM did not boot the kernel shipped in lib/libbox-kernel:" >&2; cat "$tmp/c/out-cli" >&2; return 1; }
	echo "dist: release tarball ok (C example on vm and sandbox, bin/box run)"
}

DIST_SMOKE_PY='
import asyncio, libbox
async def main():
    for iso in ("vm", "sandbox"):
        async with libbox.Box(isolation=iso) as b:
            rs = await asyncio.gather(*(b.exec("echo", f"{iso}-{i}") for i in range(4)))
            assert [r.stdout.strip() for r in rs] == [f"{iso}-{i}" for i in range(4)], rs
            kernel = (await b.info()).get("backend", {}).get("kernel", "")
            if iso == "vm":
                assert "/_lib/libbox-kernel/" in kernel, f"booted {kernel!r}, not the kernel shipped in the wheel"
            print(iso, "ok", kernel)
asyncio.run(main())
'

dist_test_wheel() {
	local tmp="$1" home="$1/home-py"
	mkdir -p "$home"
	dist_clean_env python3 -m venv "$tmp/venv" || { echo "dist: python3 -m venv failed" >&2; return 1; }
	dist_clean_env "$tmp/venv/bin/python" -m pip install --no-index --quiet --disable-pip-version-check "$(python_wheel)" ||
		{ echo "dist: pip install of the wheel failed" >&2; return 1; }
	(cd "$tmp" && dist_clean_env HOME="$home" timeout -k 5 300 "$tmp/venv/bin/python" -c "$DIST_SMOKE_PY") ||
		{ echo "dist: the installed wheel could not run a VM and a sandbox box" >&2; return 1; }
	echo "dist: wheel ok"
}

DIST_SMOKE_JS='
const { Runtime } = require("libbox");
(async () => {
  const rt = new Runtime();
  try {
    for (const isolation of ["vm", "sandbox"]) {
      const box = await rt.create({ isolation });
      const rs = await Promise.all([0, 1, 2, 3].map(i => box.exec("echo", [`${isolation}-${i}`])));
      rs.forEach((r, i) => { if (r.stdout.trim() !== `${isolation}-${i}`) throw new Error(`bad output ${r.stdout}`); });
      const kernel = ((await box.info()).backend || {}).kernel || "";
      if (isolation === "vm" && !kernel.includes("/node_modules/libbox/libbox-kernel/")) {
        throw new Error(`booted ${kernel}, not the kernel shipped in the npm package`);
      }
      console.log(isolation, "ok", kernel);
      await box.close();
    }
  } finally { await rt.close(); }
})().catch(e => { console.error(e); process.exit(1); });
'

dist_test_npm() {
	local tmp="$1" home="$1/home-js"
	mkdir -p "$tmp/npm" "$home"
	node_install "$tmp/npm"
	(cd "$tmp/npm" && dist_clean_env HOME="$home" timeout -k 5 300 node -e "$DIST_SMOKE_JS") ||
		{ echo "dist: the installed npm package could not run a VM and a sandbox box" >&2; return 1; }
	echo "dist: npm package ok"
}
