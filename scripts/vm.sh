# scripts/vm.sh — the QEMU micro-VM backend (libbox/qemu).
# deps: QEMU and a Linux kernel for the guest. The kernel is Debian's cloud
# kernel, downloaded with apt-get and unpacked (dpkg-deb -x) into a cache
# dir; the host's own boot setup is never touched. libbox/qemu looks for it
# in $LIBBOX_KERNEL, then in the cache dirs below, then in /boot.
COMPONENTS+=(vm)

# KERNEL_KIT is the guest kernel kit shipped beside libbox.so in every package
# (build/lib/libbox-kernel): the kernel and exactly the modules a box loads.
KERNEL_KIT="$BUILD/lib/libbox-kernel"

# qemu-system-x86 brings qemu-system-common (virtiofsd, for volumes);
# busybox-static is the init of the accelerator probe and bare boot.
vm_deps_packages() {
	APT_PACKAGES+=(qemu-system-x86 qemu-utils e2fsprogs busybox-static util-linux mount)
}

# vm_kernel_cache prints the cache dir: /var/cache/libbox/kernel for root,
# else ~/.cache/libbox/kernel (both are searched by libbox/qemu).
vm_kernel_cache() {
	if [ "$(id -u)" -eq 0 ]; then
		echo /var/cache/libbox/kernel
	else
		echo "${XDG_CACHE_HOME:-$HOME/.cache}/libbox/kernel"
	fi
}

vm_deps() {
	[ -n "${LIBBOX_KERNEL:-}" ] && return 0
	case "$(uname -m)" in
	x86_64) ;;
	*) return 0 ;; # only amd64 kernels are fetched for now; set LIBBOX_KERNEL
	esac
	local meta=linux-image-cloud-amd64 pkg cache dir tmp
	cache="$(vm_kernel_cache)"
	# Already unpacked? (any version will do; no apt metadata needed)
	if compgen -G "$cache/*/boot/vmlinuz-*" >/dev/null; then
		return 0
	fi
	pkg="$(apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)"
	if [ -z "$pkg" ]; then
		local sudo=""
		[ "$(id -u)" -eq 0 ] || sudo="sudo"
		$sudo apt-get update -qq >/dev/null
		pkg="$(apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)"
	fi
	[ -n "$pkg" ] || die "vm: cannot resolve $meta with apt-cache: enable Debian's main archive or set LIBBOX_KERNEL"
	dir="$cache/${pkg#linux-image-}"
	log "vm: fetching guest kernel $pkg into $dir"
	mkdir -p "$cache"
	tmp="$(mktemp -d "$cache/.fetch.XXXXXX")"
	(cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1) ||
		{ rm -rf "$tmp"; die "vm: apt-get download $pkg failed: check apt sources or set LIBBOX_KERNEL"; }
	mkdir -p "$tmp/root"
	dpkg-deb -x "$tmp"/*.deb "$tmp/root"
	chmod -R a+rX "$tmp/root"
	rm -rf "$dir"
	mv "$tmp/root" "$dir"
	rm -rf "$tmp"
}

# vm_prebuild writes the kernel kit (rebuilt when its generator or the cached
# kernel changed).
vm_prebuild() {
	local gen=libbox/internal/vmboot/internal/mkkit stamp="$BUILD/.kernel-kit-stamp" want
	want="$(cat "$gen"/*.go libbox/internal/vmboot/kit.go libbox/internal/vmboot/modules.go | sha256sum | cut -c1-16) ${LIBBOX_KERNEL:-} $(ls -d "$(vm_kernel_cache)"/*/ 2>/dev/null | tr '\n' ' ')"
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
		return 0
	fi
	log "vm: writing the guest kernel kit $KERNEL_KIT"
	mkdir -p "$(dirname "$KERNEL_KIT")"
	go run ./$gen -o "$KERNEL_KIT" -kernel "${LIBBOX_KERNEL:-}" -modules "${LIBBOX_KERNEL_MODULES:-}" >/dev/null || die "vm: building the kernel kit failed"
	echo "$want" >"$stamp"
}
