// Package listen turns an agent listen address (unix:PATH, fd:N, vsock:PORT,
// serial:DEV) into a net.Listener. It never serves anything itself.
package listen

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/mdlayher/vsock"
)

// Listen returns a listener for addr.
func Listen(addr string) (net.Listener, error) {
	kind, arg, ok := strings.Cut(addr, ":")
	if !ok || arg == "" {
		return nil, fmt.Errorf("listen address %q: want unix:PATH, fd:N, vsock:PORT or serial:DEV", addr)
	}
	switch kind {
	case "unix":
		_ = os.Remove(arg)
		ln, err := net.Listen("unix", arg)
		if err != nil {
			return nil, err
		}
		if err := os.Chmod(arg, 0o600); err != nil {
			ln.Close()
			return nil, err
		}
		return ln, nil
	case "fd":
		n, err := strconv.Atoi(arg)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("listen address %q: bad fd", addr)
		}
		f := os.NewFile(uintptr(n), "listener")
		if f == nil {
			return nil, fmt.Errorf("listen address %q: fd not open", addr)
		}
		defer f.Close() // FileListener dups it
		return net.FileListener(f)
	case "vsock":
		port, err := strconv.ParseUint(arg, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: bad port", addr)
		}
		return vsock.Listen(uint32(port), nil)
	case "serial":
		return Serial(arg)
	}
	return nil, fmt.Errorf("listen address %q: unknown kind %q", addr, kind)
}
