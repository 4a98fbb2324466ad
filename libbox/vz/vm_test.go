package vz

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/guest/bootparam"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// These tests cover every part of the backend that is not a vz call; they
// run on every OS (the vz calls are type-checked by tools/darwincheck).

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestKernelFrom(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "Image")
	if err := os.WriteFile(img, []byte("kernel"), 0o644); err != nil {
		t.Fatal(err)
	}

	_, err := kernelFrom("", "")
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("no LIBBOX_KERNEL: got %v, want FailedPrecondition", err)
	}
	for _, want := range []string{"LIBBOX_KERNEL", "arm64", "vsock", "libbox/vz/README.md"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say what to do (%q missing): %v", want, err)
		}
	}
	if _, err := kernelFrom(filepath.Join(dir, "nope"), ""); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "nope") || !strings.Contains(err.Error(), "libbox/vz/README.md") {
		t.Errorf("missing kernel: got %v, want NotFound naming the path and the vz hint", err)
	}
	if _, err := kernelFrom(dir, ""); !errdefs.IsInvalidArgument(err) {
		t.Errorf("directory as kernel: got %v, want InvalidArgument", err)
	}
	k, err := kernelFrom(img, dir)
	if err != nil || k.Image != img || k.Modules != dir {
		t.Errorf("kernelFrom = %+v, %v; want Image %s Modules %s", k, err, img, dir)
	}
}

func TestCheckSpec(t *testing.T) {
	if err := checkSpec(backend.Spec{Detach: true}); !errdefs.IsUnsupported(err) {
		t.Errorf("detach: got %v, want Unsupported", err)
	}
	if err := checkSpec(backend.Spec{Network: true}); !errdefs.IsUnsupported(err) {
		t.Errorf("network: got %v, want Unsupported", err)
	}
	if err := checkSpec(backend.Spec{CPUs: 2}); err != nil {
		t.Errorf("plain spec: %v", err)
	}
}

func TestCmdlineIsWhatTheGuestParses(t *testing.T) {
	p := bootparam.ParseCmdline(cmdline(backend.Spec{}, false))
	if p[bootparam.ParamRoot] != "/dev/vda" || p[bootparam.ParamVsock] != "1024" {
		t.Errorf("root/vsock: %v", p)
	}
	if _, ok := p[bootparam.ParamPort]; ok {
		t.Errorf("a vz box has no virtio-serial port: %v", p)
	}
	mods := strings.Split(p[bootparam.ParamModules], ",")
	if !slices.Contains(mods, "vmw_vsock_virtio_transport") || !slices.Contains(mods, "virtio_blk") || slices.Contains(mods, "virtiofs") {
		t.Errorf("modules without volumes: %v", mods)
	}
	if _, ok := p[bootparam.ParamVolumes]; ok {
		t.Errorf("volumes without volumes: %v", p)
	}

	spec := backend.Spec{Hostname: "web1", Volumes: []backend.Volume{
		{HostPath: "/h/a", BoxPath: "/data dir/x,y:z"},
		{HostPath: "/h/b", BoxPath: "/ro", ReadOnly: true},
	}}
	line := cmdline(spec, false)
	if !strings.HasPrefix(line, "console=hvc0 ") {
		t.Errorf("console: %q", line)
	}
	p = bootparam.ParseCmdline(line)
	if p[bootparam.ParamHostname] != "web1" {
		t.Errorf("hostname: %v", p)
	}
	if !slices.Contains(strings.Split(p[bootparam.ParamModules], ","), "virtiofs") {
		t.Errorf("volumes need virtiofs: %v", p[bootparam.ParamModules])
	}
	vols, err := bootparam.ParseVolumes(p[bootparam.ParamVolumes])
	if err != nil {
		t.Fatal(err)
	}
	want := []bootparam.Volume{{Tag: vmboot.VolumeTag(0), BoxPath: "/data dir/x,y:z"}, {Tag: vmboot.VolumeTag(1), BoxPath: "/ro", ReadOnly: true}}
	if !slices.Equal(vols, want) {
		t.Errorf("volumes = %+v, want %+v", vols, want)
	}
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o600)
}

func TestBoxDisk(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.ext4")
	if err := os.WriteFile(base, []byte("ext4"), 0o644); err != nil {
		t.Fatal(err)
	}
	box := filepath.Join(dir, "box")
	if err := os.Mkdir(box, 0o700); err != nil {
		t.Fatal(err)
	}

	failing := func(src, dst string) error {
		_ = os.WriteFile(dst, []byte("half"), 0o600)
		return errors.New("clonefile: operation not supported")
	}
	if _, err := boxDisk(box, base, failing); !(errdefs.CodeOf(err) == errdefs.Internal) || !strings.Contains(err.Error(), "APFS") {
		t.Errorf("failed clone: got %v, want Internal mentioning APFS", err)
	}
	if ents, _ := os.ReadDir(box); len(ents) != 0 {
		t.Errorf("a failed clone left %v behind", ents)
	}

	clones := 0
	counting := func(src, dst string) error { clones++; return copyFile(src, dst) }
	disk, err := boxDisk(box, base, counting)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(disk); string(b) != "ext4" {
		t.Errorf("box disk holds %q", b)
	}
	if err := os.WriteFile(disk, []byte("written by the box"), 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := boxDisk(box, base, counting)
	if err != nil || again != disk || clones != 1 {
		t.Errorf("restart: disk %s err %v clones %d; want the same disk kept", again, err, clones)
	}
	if b, _ := os.ReadFile(disk); string(b) != "written by the box" {
		t.Errorf("a restart replaced the box's disk: %q", b)
	}
}

func TestConnectRetry(t *testing.T) {
	never := make(chan struct{})
	stopped := func() error { return errdefs.New(errdefs.Unavailable, "stopped") }

	t.Run("retries until the agent listens", func(t *testing.T) {
		var peers []net.Conn
		defer func() {
			for _, c := range peers {
				c.Close()
			}
		}()
		calls := 0
		connect := func() (net.Conn, error) {
			calls++
			if calls < 4 {
				return nil, errors.New("connection refused")
			}
			a, b := net.Pipe()
			peers = append(peers, b)
			return a, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := connectRetry(ctx, never, connect, stopped)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if calls != 4 {
			t.Errorf("%d connects, want 4", calls)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := connectRetry(ctx, never, func() (net.Conn, error) { return nil, errors.New("connection refused") }, stopped)
		if !errdefs.IsDeadlineExceeded(err) || !strings.Contains(err.Error(), "1024") || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("got %v, want DeadlineExceeded naming the port and the last error", err)
		}
	})

	t.Run("vm stopped", func(t *testing.T) {
		done := make(chan struct{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		calls := 0
		connect := func() (net.Conn, error) {
			calls++
			if calls == 2 {
				close(done)
			}
			return nil, errors.New("connection refused")
		}
		if _, err := connectRetry(ctx, done, connect, stopped); !errdefs.IsUnavailable(err) || err.Error() != "stopped" {
			t.Errorf("got %v, want the stopped error", err)
		}
	})
}

func TestStopSequence(t *testing.T) {
	type run struct {
		mu    sync.Mutex
		steps []string
	}
	step := func(r *run, name string, closeDone chan struct{}, err error) stopStep {
		return stopStep{name: name, wait: 20 * time.Millisecond, do: func() error {
			r.mu.Lock()
			r.steps = append(r.steps, name)
			r.mu.Unlock()
			if closeDone != nil {
				close(closeDone)
			}
			return err
		}}
	}

	t.Run("guest powers off in the grace", func(t *testing.T) {
		done := make(chan struct{})
		close(done)
		r := &run{}
		if err := stopSequence(context.Background(), done, time.Minute, []stopStep{step(r, "request", nil, nil)}); err != nil || len(r.steps) != 0 {
			t.Errorf("err %v, steps %v; want no escalation", err, r.steps)
		}
	})

	t.Run("escalates until stopped", func(t *testing.T) {
		done := make(chan struct{})
		r := &run{}
		err := stopSequence(context.Background(), done, 10*time.Millisecond, []stopStep{
			step(r, "request", nil, errors.New("not now")),
			step(r, "stop", done, nil),
			step(r, "never", nil, nil),
		})
		if err != nil || !slices.Equal(r.steps, []string{"request", "stop"}) {
			t.Errorf("err %v, steps %v; want request then stop", err, r.steps)
		}
	})

	t.Run("a cancelled ctx still stops the VM", func(t *testing.T) {
		done := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r := &run{}
		if err := stopSequence(ctx, done, time.Minute, []stopStep{step(r, "stop", done, nil)}); err != nil || len(r.steps) != 1 {
			t.Errorf("err %v, steps %v; want the stop step run", err, r.steps)
		}
	})

	t.Run("never stops", func(t *testing.T) {
		done := make(chan struct{})
		r := &run{}
		err := stopSequence(context.Background(), done, 10*time.Millisecond, []stopStep{
			step(r, "request", nil, errors.New("refused")),
			step(r, "stop", nil, nil),
		})
		if !(errdefs.CodeOf(err) == errdefs.Internal) || !strings.Contains(err.Error(), "refused") || len(r.steps) != 2 {
			t.Errorf("err %v, steps %v; want Internal after both steps", err, r.steps)
		}
	})
}

func TestNewOnOtherSystems(t *testing.T) {
	_, err := New(Options{Home: t.TempDir()})
	if runtime.GOOS == "darwin" {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if !errdefs.IsUnsupported(err) || !strings.Contains(err.Error(), "macOS") {
		t.Errorf("got %v, want Unsupported saying macOS", err)
	}
}
