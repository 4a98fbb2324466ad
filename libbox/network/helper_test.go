package network

import (
	"encoding/json"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/libbox/libbox/errdefs"
)

// fakeHelper listens where a box's helper would and answers the first
// `answers` info requests with info; later requests it reads and never
// answers (a hung helper), until the test ends.
func fakeHelper(t *testing.T, dir string, info Info, answers int) {
	t.Helper()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(dir, HelperSocket), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []*net.UnixConn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			if _, err := c.Read(buf); err != nil || i >= answers {
				mu.Lock()
				held = append(held, c) // hung: no answer
				mu.Unlock()
				continue
			}
			b, _ := json.Marshal(helperReply{Info: &info})
			c.Write(b)
			c.Close()
		}
	}()
}

func TestHelperInfoUnavailable(t *testing.T) {
	want := Info{Address: "192.168.127.2/24", Gateway: "192.168.127.1", MTU: 1500, Denied: 7,
		Ports: []PortMapping{{Host: "127.0.0.1:8080", Box: 80, Protocol: "tcp"}}}

	t.Run("gone", func(t *testing.T) {
		if _, err := DialHelper(t.TempDir()); !errdefs.IsNotFound(err) {
			t.Fatalf("DialHelper without a helper: %v, want NotFound", err)
		}
	})
	t.Run("answers, then hangs", func(t *testing.T) {
		dir := t.TempDir()
		fakeHelper(t, dir, want, 2) // DialHelper's and the first Info's
		h, err := DialHelper(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.Info(); got.Unavailable != "" || got.Denied != 7 || len(got.Ports) != 1 {
			t.Fatalf("info of an answering helper: %+v", got)
		}
		got := h.Info()
		if got.Unavailable == "" {
			t.Fatalf("info of a hung helper is not marked unavailable: %+v", got)
		}
		if got.Denied != 7 || len(got.Ports) != 1 || got.Ports[0] != want.Ports[0] {
			t.Fatalf("info of a hung helper: %+v, want its last answer", got)
		}
		t.Logf("marker: %s", got.Unavailable)
	})
	t.Run("never answers", func(t *testing.T) {
		dir := t.TempDir()
		fakeHelper(t, dir, want, 0)
		h, err := DialHelper(dir) // followed all the same
		if err != nil {
			t.Fatal(err)
		}
		got := h.Info()
		if got.Unavailable == "" || got.Address != want.Address || got.Denied != 0 || got.Ports == nil {
			t.Fatalf("info of a helper that never answered: %+v", got)
		}
	})
}
