# shellcheck shell=bash
# The macOS backend (libbox/vz). On Linux its Go code cannot be compiled (vz
# is cgo + Objective-C), so `test` type-checks it for GOOS=darwin with
# tools/darwincheck; on macOS `build` also builds libbox.dylib and signs the
# box CLI with the virtualization entitlement.
COMPONENTS+=(darwin)

darwin_test() {
	log "type-checking the macOS backend for GOOS=darwin (tools/darwincheck)"
	go run ./tools/darwincheck -arch arm64 ./libbox/vz ./libbox ./libbox/capi ./cmd/box
	go run ./tools/darwincheck -arch amd64 ./libbox/vz
}

darwin_build() {
	[ "$(uname -s)" = Darwin ] || return 0
	log "building libbox.dylib and signing box (com.apple.security.virtualization)"
	# The agent inside the VMs is a Linux binary of the Mac's architecture.
	CGO_ENABLED=0 GOOS=linux GOARCH="$(go env GOARCH)" go build -trimpath -ldflags "-s -w -X main.version=$VERSION" \
		-o libbox/internal/agentbin/box-agent ./guest/cmd/box-agent
	go build -trimpath -buildmode=c-shared -ldflags "-s -w -X github.com/libbox/libbox/libbox.Version=$VERSION" \
		-o "$BUILD/lib/libbox.dylib" ./libbox/capi
	rm -f "$BUILD/lib/libbox.h"
	go build -trimpath -o "$BUILD/bin/box" ./cmd/box
	codesign --force --sign - --entitlements libbox/vz/vz.entitlements "$BUILD/bin/box"
}
