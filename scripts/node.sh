# scripts/node.sh — the Node package (bindings/node): a Node-API addon in C
# compiled with the system compiler against the running Node's headers (no
# node-gyp, no network), packed with `npm pack` into dist/libbox-<version>.tgz
# together with libbox.so; tests and the demo run from an offline install of
# that tarball in a fresh directory. Sourced by build.sh.
COMPONENTS+=(node)

node_deps_packages() {
	command -v node >/dev/null || APT_PACKAGES+=(nodejs)
	command -v npm >/dev/null || APT_PACKAGES+=(npm)
	node_include_dir >/dev/null 2>&1 || APT_PACKAGES+=(libnode-dev)
	return 0
}

# Prints the directory holding node_api.h for the node on PATH.
node_include_dir() {
	local d
	for d in "$(dirname "$(dirname "$(command -v node)")")/include/node" /usr/include/node; do
		if [ -f "$d/node_api.h" ]; then
			echo "$d"
			return 0
		fi
	done
	return 1
}

node_tgz() { echo "$ROOT/dist/libbox-$VERSION.tgz"; }

node_build() {
	local so="$BUILD/lib/libbox.so" stage="$BUILD/node/package" inc
	[ -f "$so" ] || die "node: $so is missing: build libbox.so first (./build.sh build)"
	inc="$(node_include_dir)" || die "node: node_api.h not found: install libnode-dev or a Node with headers"
	log "building the Node package (dist/libbox-$VERSION.tgz)"
	rm -rf "$stage"
	mkdir -p "$stage" "$ROOT/dist"
	cp "$ROOT"/bindings/node/{index.js,index.mjs,index.d.ts,README.md} "$stage/"
	cp "$so" "$stage/libbox.so"
	# The guest kernel kit ships beside libbox.so, where libbox looks first.
	[ -d "$KERNEL_KIT" ] && cp -a "$KERNEL_KIT" "$stage/libbox-kernel"
	# version from VERSION; cpu is the architecture libbox.so was built for.
	node -e 'const fs=require("fs");const p=JSON.parse(fs.readFileSync(process.argv[1]));p.version=process.argv[2];p.cpu=[process.arch];fs.writeFileSync(process.argv[3],JSON.stringify(p,null,2)+"\n")' \
		"$ROOT/bindings/node/package.json" "$VERSION" "$stage/package.json"
	# -L/-lbox (not the path) so DT_NEEDED is "libbox.so", found via $ORIGIN.
	gcc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror -fPIC -shared \
		-I"$inc" -I"$ROOT/include" -o "$stage/libbox.node" "$ROOT/bindings/node/src/addon.c" \
		-L"$stage" -lbox -Wl,-rpath,'$ORIGIN' -lpthread
	rm -f "$(node_tgz)"
	(cd "$stage" && npm pack --silent --pack-destination "$ROOT/dist" >/dev/null)
	[ -f "$(node_tgz)" ] || die "node: npm pack did not write $(node_tgz)"
}

# node_install DIR: installs the packed tarball into DIR, offline.
node_install() {
	local dir="$1"
	printf '{"name":"libbox-consumer","version":"0.0.0","private":true}\n' >"$dir/package.json"
	(cd "$dir" && npm install --offline --no-audit --no-fund --silent --no-package-lock "$(node_tgz)" >/dev/null) ||
		die "node: npm install --offline $(node_tgz) failed"
}

# node_fresh NAME FILE... -- CMD...: installs the tarball offline into a new
# temporary directory, copies FILEs there and runs CMD in it with a fresh
# LIBBOX_HOME; the directory is removed afterwards, whatever happens.
node_fresh() {
	local name="$1"
	shift
	(
		dir="$(mktemp -d "${TMPDIR:-/tmp}/libbox-node-$name.XXXXXX")"
		trap 'rm -rf "$dir"' EXIT
		node_install "$dir"
		while [ "$1" != "--" ]; do
			cp "$1" "$dir/" || exit 1
			shift
		done
		shift
		mkdir "$dir/home" && cd "$dir" || exit 1
		LIBBOX_HOME="$dir/home" "$@"
	)
}

node_test() {
	node_typecheck
	log "node --test (installed $(basename "$(node_tgz)"))"
	node_fresh test "$ROOT"/bindings/node/test/*.test.js "$ROOT"/bindings/node/test/*.test.mjs -- \
		timeout -k 10 900 sh -c 'exec node --test --test-reporter=spec ./*.test.js ./*.test.mjs' ||
		die "node: tests failed"
}

node_demo() {
	log "examples/node/concurrent.js"
	node_fresh demo "$ROOT/examples/node/concurrent.js" -- timeout -k 10 120 node concurrent.js ||
		die "node: demo failed"
}

node_bench() {
	mkdir -p "$ROOT/bench/out"
	node_fresh bench "$ROOT/bindings/node/bench/all1000.js" -- \
		timeout -k 10 900 node all1000.js "$ROOT/bench/out/results.json" "$BUILD/bin/libbox-bench" ||
		die "node: bench failed"
}

# node_typecheck compiles bindings/node/types/example.ts (which uses every
# export) against index.d.ts with tsc --noEmit; typescript and @types/node at
# the versions bindings/node/package.json's devDependencies pin, installed
# from the npm registry into build/node/tsc.
node_typecheck() {
	local dir="$BUILD/node/tsc" deps
	deps="$(node -e 'const d=require(process.argv[1]).devDependencies;console.log(Object.entries(d).map(([k,v])=>k+"@"+v).join(" "))' \
		"$ROOT/bindings/node/package.json")"
	if [ ! -x "$dir/node_modules/.bin/tsc" ] || [ "$(cat "$dir/.deps" 2>/dev/null)" != "$deps" ]; then
		log "node: installing $deps for the type check"
		rm -rf "$dir"
		mkdir -p "$dir"
		printf '{"name":"libbox-typecheck","version":"0.0.0","private":true}\n' >"$dir/package.json"
		# shellcheck disable=SC2086
		(cd "$dir" && npm install --no-audit --no-fund --silent --no-package-lock $deps >/dev/null) ||
			die "node: npm install $deps failed (the type check needs the npm registry)"
		echo "$deps" >"$dir/.deps"
	fi
	log "node: tsc --noEmit (index.d.ts against types/example.ts)"
	"$dir/node_modules/.bin/tsc" -p "$ROOT/bindings/node/types/tsconfig.json" --typeRoots "$dir/node_modules/@types" ||
		die "node: index.d.ts does not type-check against bindings/node/types/example.ts"
}
