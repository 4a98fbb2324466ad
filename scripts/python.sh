# scripts/python.sh — the Python package `libbox` (bindings/python): a wheel
# built with the standard library (bindings/python/build_wheel.py) holding the
# package and libbox.so, tested installed in a fresh venv. Sourced by build.sh.
COMPONENTS+=(python)

PYTHON_VENV="$BUILD/python/venv"

python_deps_packages() {
	# Debian's python3 needs python3-venv for `python3 -m venv` (with pip).
	APT_PACKAGES+=(python3 python3-venv)
}

# python_wheel prints the wheel's path; its platform tag is the manylinux tag
# true of build/lib/libbox.so (build_wheel.py reads the glibc versions it needs).
python_wheel() {
	local tag
	tag="$(python3 "$ROOT/bindings/python/build_wheel.py" --version "$VERSION" --lib "$BUILD/lib/libbox.so" \
		--out "$ROOT/dist" --print-tag)" || die "python: cannot read the platform tag of $BUILD/lib/libbox.so"
	echo "$ROOT/dist/libbox-$VERSION-py3-none-$tag.whl"
}

python_build() {
	if [ ! -f "$BUILD/lib/libbox.so" ]; then
		log "python: no $BUILD/lib/libbox.so yet (libbox/capi missing): wheel not built"
		return 0
	fi
	local whl
	whl="$(python_wheel)"
	if [ -f "$whl" ] && [ "$whl" -nt "$BUILD/lib/libbox.so" ] &&
		[ -z "$(find "$ROOT/bindings/python/libbox" "$ROOT/bindings/python/build_wheel.py" "$KERNEL_KIT" -newer "$whl" -print -quit)" ]; then
		return 0
	fi
	log "python: building $(basename "$whl")"
	mkdir -p "$ROOT/dist"
	rm -f "$ROOT"/dist/libbox-*-py3-none-*.whl
	python3 "$ROOT/bindings/python/build_wheel.py" --version "$VERSION" --lib "$BUILD/lib/libbox.so" \
		--kernel-kit "$KERNEL_KIT" --out "$ROOT/dist" >/dev/null
}

# python_venv [fresh]: a venv under build/ with the wheel installed offline.
python_venv() {
	local whl
	whl="$(python_wheel)"
	[ -f "$whl" ] || die "python: $whl missing: run ./build.sh build (it needs build/lib/libbox.so)"
	if [ "${1:-}" = fresh ] || [ ! -x "$PYTHON_VENV/bin/python" ] || [ "$whl" -nt "$PYTHON_VENV/.installed" ]; then
		rm -rf "$PYTHON_VENV"
		python3 -m venv "$PYTHON_VENV" ||
			die "python: python3 -m venv failed: install python3-venv (./build.sh deps does)"
		"$PYTHON_VENV/bin/python" -m pip install --no-index --quiet --disable-pip-version-check "$whl" ||
			die "python: pip install $whl failed"
		touch "$PYTHON_VENV/.installed"
	fi
}

python_test() {
	log "python: unittest against the installed wheel"
	python_venv fresh
	# Run from outside the source tree so `import libbox` is the installed one.
	mkdir -p "$BUILD/python/run"
	(cd "$BUILD/python/run" && LIBBOX_TEST_INSTALLED=1 "$PYTHON_VENV/bin/python" -m unittest discover \
		-s "$ROOT/bindings/python/tests" -t "$ROOT/bindings/python/tests" -v)
}

python_demo() {
	python_venv
	log "python: examples/python/concurrent.py"
	(cd "$BUILD/python" && LIBBOX_ISOLATION="${LIBBOX_ISOLATION:-sandbox}" \
		"$PYTHON_VENV/bin/python" "$ROOT/examples/python/concurrent.py")
}

python_bench() {
	python_venv
	log "python: binding.python.gather1000_ms"
	(cd "$BUILD/python" && "$PYTHON_VENV/bin/python" "$ROOT/bindings/python/bench/gather.py" \
		--go-bench "$BUILD/bin/libbox-bench" \
		--results "$ROOT/bench/out/results.json")
}
