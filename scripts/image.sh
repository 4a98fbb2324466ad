# scripts/image.sh — the image store (libbox/image): builds the builtin
# busybox image that libbox embeds (libbox/image/builtin/busybox.tar.gz) from
# Debian's busybox-static. Sourced by build.sh.
COMPONENTS+=(image)

image_deps_packages() {
	# busybox-static provides /bin/busybox for the builtin image;
	# docker-registry (the CNCF distribution registry) and apache2-utils
	# (htpasswd) serve the real-registry tests of libbox/image.
	local p
	for p in busybox-static docker-registry apache2-utils; do
		case " ${APT_PACKAGES[*]} " in
		*" $p "*) ;;
		*) APT_PACKAGES+=("$p") ;;
		esac
	done
}

image_prebuild() {
	local out=libbox/image/builtin/busybox.tar.gz bb=/bin/busybox
	local gen=libbox/image/internal/mkbuiltin/main.go
	[ -x "$bb" ] || die "no $bb: install Debian's busybox-static (./build.sh deps)"
	if [ -s "$out" ] && [ "$out" -nt "$bb" ] && [ "$out" -nt "$gen" ]; then
		return 0
	fi
	log "building the builtin busybox image"
	go run ./libbox/image/internal/mkbuiltin -busybox "$bb" -o "$out"
}
