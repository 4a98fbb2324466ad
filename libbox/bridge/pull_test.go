package bridge_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/bridge"
)

// hangingRegistry answers the registry ping and then holds every request
// until the client gives up: opened gets each held request, gone each one
// the client abandoned.
func hangingRegistry(t *testing.T) (host string, opened <-chan struct{}, gone <-chan struct{}) {
	t.Helper()
	op, gn := make(chan struct{}, 16), make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		op <- struct{}{}
		select {
		case <-r.Context().Done():
			gn <- struct{}{}
		case <-time.After(30 * time.Second):
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), op, gn
}

// TestPullAsyncCancel: a pull started with PullAsync stops when cancelled
// (its connections to the registry close) and completes once, Canceled;
// bad requests are refused.
func TestPullAsyncCancel(t *testing.T) {
	host, opened, gone := hangingRegistry(t)
	t.Setenv("LIBBOX_INSECURE_REGISTRIES", host)
	t.Setenv("LIBBOX_REGISTRY_MIRRORS", "")
	t.Setenv("LIBBOX_REGISTRY_AUTH", "")
	rt, err := bridge.RuntimeOpen(fmt.Sprintf(`{"home":%q}`, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer bridge.RuntimeClose(rt)

	type res struct {
		st  int32
		msg string
	}
	done := make(chan res, 2)
	h, err := bridge.PullAsync(rt, fmt.Sprintf(`{"ref":"%s/x/y:1","platform":"linux/arm64"}`, host), nil,
		func(st int32, msg string, _ uint64, _ string) { done <- res{st, msg} })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-opened:
	case <-time.After(20 * time.Second):
		t.Fatal("the pull never reached the registry")
	}
	if err := bridge.PullCancel(h); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if errdefs.Code(r.st) != errdefs.Canceled {
			t.Errorf("cancelled pull completed with %s %q, want Canceled", errdefs.Code(r.st), r.msg)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("cancelled pull did not complete")
	}
	select {
	case <-gone:
	case <-time.After(20 * time.Second):
		t.Error("the cancelled pull kept its connection to the registry open")
	}
	if err := bridge.PullCancel(h); err != nil {
		t.Errorf("second cancel: %v", err)
	}
	if err := bridge.Release(h); err != nil {
		t.Errorf("release: %v", err)
	}
	if err := bridge.PullCancel(h); err == nil || !strings.Contains(err.Error(), "released") {
		t.Errorf("cancel after release: %v", err)
	}
	for _, c := range []struct{ req, sub string }{
		{`{}`, "ref is required"},
		{`{"ref":"busybox","platfrom":"x"}`, "unknown field"},
		{`{"ref":"busybox"`, "invalid JSON"},
	} {
		if _, err := bridge.PullAsync(rt, c.req, nil, func(int32, string, uint64, string) { t.Error("rejected pull completed") }); err == nil ||
			!strings.Contains(err.Error(), c.sub) {
			t.Errorf("PullAsync(%s) = %v, want %q", c.req, err, c.sub)
		}
	}
	select {
	case r := <-done:
		t.Errorf("a second completion: %+v", r)
	default:
	}
}
