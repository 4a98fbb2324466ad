# shellcheck shell=bash
# The macOS backend (libbox/vz). On Linux its vz calls cannot be compiled (vz
# is cgo + Objective-C), so `test` type-checks them for GOOS=darwin with
# tools/darwincheck: vz's own source first, then libbox's darwin code. On
# macOS `build` also builds libbox.dylib and signs the box CLI with the
# virtualization entitlement (see libbox/vz/README.md).
COMPONENTS+=(darwin)

darwin_test() {
	log "type-checking the macOS backend for GOOS=darwin (tools/darwincheck)"
	go run ./tools/darwincheck -arch arm64 github.com/Code-Hex/vz/v3 ./libbox/vz ./libbox ./libbox/capi ./cmd/box
	go run ./tools/darwincheck -arch amd64 github.com/Code-Hex/vz/v3 ./libbox/vz
}

darwin_build() {
	[ "$(uname -s)" = Darwin ] || return 0
	log "building libbox.dylib and signing box (com.apple.security.virtualization)"
	# cmd_build already put a Linux agent of this Mac's architecture into
	# libbox/internal/agentbin/bin; the VMs run it.
	go build -trimpath -buildmode=c-shared \
		-ldflags "-s -w -X github.com/libbox/libbox/libbox.Version=$VERSION -extldflags=-Wl,-install_name,@rpath/libbox.dylib" \
		-o "$BUILD/lib/libbox.dylib" ./libbox/capi
	rm -f "$BUILD/lib/libbox.h"
	codesign --force --sign - --entitlements libbox/vz/vz.entitlements "$BUILD/bin/box"
}
