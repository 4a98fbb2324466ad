#!/usr/bin/env bash
# build.sh — one command per task, each working on a fresh Debian machine:
#   deps    install missing Debian packages and Go modules (idempotent, quiet)
#   build   build the agent, libbox.so, the CLI, the Python wheel and npm package
#   test    build, then run every test suite (Go with -race, C, Python, Node)
#   demo    build, then run the concurrent-exec demo on the builtin image
#   bench   build, then measure; prints a table, writes bench/out/results.json
#   stress  build, then run the long stress; writes bench/out/stress.json
#   proto   regenerate guest/agentpb from agent.proto
# Components add their steps in scripts/*.sh as functions named
# <component>_deps, <component>_build, <component>_test, <component>_demo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
VERSION="$(cat VERSION)"
BUILD="$ROOT/build"
COMPONENTS=()
APT_PACKAGES=(protobuf-compiler busybox-static bubblewrap e2fsprogs pkg-config gcc cpio)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
have_fn() { declare -F "$1" >/dev/null; }
ORDER=(image vm cli python node) # components run in this order, then any others
hook() { # hook STEP: run <component>_STEP for every component that has one
	local c seen=" "
	for c in "${ORDER[@]}" "${COMPONENTS[@]}"; do
		case "$seen" in *" $c "*) continue ;; esac
		seen="$seen$c "
		[[ " ${COMPONENTS[*]} " == *" $c "* ]] || continue
		if have_fn "${c}_$1"; then "${c}_$1"; fi
	done
}

for f in "$ROOT"/scripts/*.sh; do
	[ -e "$f" ] || continue
	# shellcheck source=/dev/null
	source "$f"
done

apt_install() { # apt_install PKG...: installs the ones missing, quietly
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get: install them by hand"
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	log "installing ${missing[*]}"
	$sudo apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

cmd_deps() {
	command -v go >/dev/null || die "Go not found: install Go 1.26 to /usr/local/go"
	hook deps_packages
	apt_install "${APT_PACKAGES[@]}"
	go mod download
	hook deps
}

GO_SOURCES_STAMP="$BUILD/.go-sources"

cmd_build() {
	cmd_deps
	mkdir -p "$BUILD/bin" "$BUILD/lib" "$BUILD/lib/pkgconfig"
	log "building box-agent (static)"
	# grpcnotrace drops golang.org/x/net/trace (and html/template) from the
	# agent: a third less binary to page in and initialise at every box start.
	CGO_ENABLED=0 GOOS=linux go build -trimpath -tags grpcnotrace -ldflags "-s -w -X main.version=$VERSION" \
		-o "$BUILD/bin/box-agent" ./guest/cmd/box-agent
	install -m 0755 "$BUILD/bin/box-agent" libbox/internal/agentbin/bin/box-agent
	log "building box-netd (static)"
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BUILD/bin/box-netd" ./cmd/box-netd
	install -m 0755 "$BUILD/bin/box-netd" libbox/internal/agentbin/bin/box-netd
	hook prebuild
	if [ -d libbox/capi ]; then
		log "building libbox.so"
		go build -trimpath -buildmode=c-shared -ldflags "-s -w -X github.com/libbox/libbox/libbox.Version=$VERSION" \
			-o "$BUILD/lib/libbox.so" ./libbox/capi
		rm -f "$BUILD/lib/libbox.h" # the cgo header is not shipped; include/libbox.h is
		sed -e "s|@PREFIX@|$BUILD|; s|@INCLUDE@|$ROOT/include|; s|@VERSION@|$VERSION|" \
			scripts/libbox.pc.in >"$BUILD/lib/pkgconfig/libbox.pc"
	fi
	for d in cmd/*/; do
		[ -d "$d" ] || continue
		go build -trimpath -ldflags "-s -w -X github.com/libbox/libbox/libbox.Version=$VERSION" \
			-o "$BUILD/bin/$(basename "$d")" "./$d"
	done
	log "building C example and tests"
	export PKG_CONFIG_PATH="$BUILD/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
	# shellcheck disable=SC2046
	cc -O2 -Wall -o "$BUILD/bin/concurrent-c" examples/c/concurrent.c $(pkg-config --cflags --libs libbox) -lpthread
	# shellcheck disable=SC2046
	cc -O1 -Wall -o "$BUILD/bin/test_capi" tests/c/test_capi.c $(pkg-config --cflags --libs libbox) -lpthread
	# shellcheck disable=SC2046
	cc -O2 -Wall -o "$BUILD/bin/bench-exec-c" bench/c/exec_p50.c $(pkg-config --cflags --libs libbox) -lpthread
	hook build
}

cmd_test() {
	cmd_build
	# The fault tests append their settle times here; docs/reliability.md is
	# rendered from them once every suite passed (tools/faulttable).
	export LIBBOX_FAULT_LOG="$BUILD/fault.jsonl"
	rm -f "$LIBBOX_FAULT_LOG"
	# VM boxes of a fresh home build a template in the background after their
	# first boot: one more TCG boot per test home. The template tests turn
	# templates on themselves; every other test boots.
	export LIBBOX_VM_TEMPLATES="${LIBBOX_VM_TEMPLATES:-0}"
	log "go vet"
	go vet ./...
	log "go test -race"
	go test -race -count=1 -timeout 30m ./...
	log "C ABI tests"
	"$BUILD/bin/test_capi"
	hook test
	log "docs/reliability.md from the measured fault table"
	go run ./tools/faulttable -in "$LIBBOX_FAULT_LOG" -out docs/reliability.md
}

cmd_demo() {
	cmd_build
	"$BUILD/bin/libbox-demo" "$@"
	hook demo
}

cmd_bench() {
	cmd_build
	mkdir -p bench/out
	"$BUILD/bin/libbox-bench" -out bench/out/results.json "$@"
	hook bench
}

cmd_stress() {
	cmd_build
	mkdir -p bench/out
	"$BUILD/bin/libbox-bench" -stress -out bench/out/stress.json "$@"
}

cmd_proto() {
	apt_install protobuf-compiler
	GOBIN="$HOME/go/bin" go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	GOBIN="$HOME/go/bin" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
	(cd guest/agentpb && protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative agent.proto)
}

case "${1:-}" in
deps | build | test | demo | bench | stress | proto)
	c="$1"
	shift
	"cmd_$c" "$@"
	;;
*)
	sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
