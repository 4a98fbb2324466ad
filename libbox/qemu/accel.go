//go:build linux

package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/internal/vmboot"
)

// Accelerators.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// probeTimeout bounds the KVM probe boot. A working KVM boots the probe
// initramfs in well under a second; the hosts where KVM is broken hang.
const probeTimeout = 15 * time.Second

type accelCache struct {
	Key   string `json:"key"`
	Accel string `json:"accel"`
	Why   string `json:"why,omitempty"`
}

// accel decides the accelerator: LIBBOX_ACCEL, else a cached probe result
// for this QEMU and kernel, else a probe boot under KVM with a deadline.
// It returns the accelerator and, for TCG, why KVM is not used.
func (b *Backend) accel(ctx context.Context, qemuBin string, k vmboot.Kernel) (string, string, error) {
	switch v := os.Getenv("LIBBOX_ACCEL"); v {
	case AccelKVM, AccelTCG:
		return v, "LIBBOX_ACCEL=" + v, nil
	case "":
	default:
		return "", "", errdefs.New(errdefs.InvalidArgument, "LIBBOX_ACCEL=%q: want kvm or tcg (or unset to probe)", v)
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return AccelTCG, fmt.Sprintf("/dev/kvm unusable (%v): load kvm_intel/kvm_amd and add this user to group kvm", err), nil
	}
	f.Close()

	b.probeMu.Lock()
	defer b.probeMu.Unlock()
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", qemuBin, k.Image)
	if st, err := os.Stat(qemuBin); err == nil {
		fmt.Fprintf(h, "%d %d\n", st.Size(), st.ModTime().UnixNano())
	}
	if host, err := os.Hostname(); err == nil {
		fmt.Fprintf(h, "%s\n", host)
	}
	key := hex.EncodeToString(h.Sum(nil))[:24]
	// The answer is a property of the host: it is kept in the libbox home
	// and in the user's cache dir (so fresh homes, as in tests, reuse it).
	files := []string{filepath.Join(b.cache, "accel.json")}
	if d, err := os.UserCacheDir(); err == nil {
		files = append(files, filepath.Join(d, "libbox", "accel.json"))
	}
	var c accelCache
	for _, f := range files {
		if raw, err := os.ReadFile(f); err == nil && json.Unmarshal(raw, &c) == nil && c.Key == key && (c.Accel == AccelKVM || c.Accel == AccelTCG) {
			return c.Accel, c.Why, nil
		}
	}
	c = accelCache{Key: key, Accel: AccelKVM}
	if d, err := b.probe(ctx, qemuBin, k, AccelKVM, probeTimeout); err != nil {
		if ctx.Err() != nil {
			return "", "", errdefs.Wrap(errdefs.CodeOf(ctx.Err()), ctx.Err(), "probing KVM")
		}
		c.Accel, c.Why = AccelTCG, "a KVM probe boot failed ("+oneLine(err.Error())+"); set LIBBOX_ACCEL=kvm to force it"
	} else {
		b.logf("vm: KVM probe boot took %s", d.Round(time.Millisecond))
	}
	raw, _ := json.Marshal(c)
	for _, f := range files {
		_ = vmboot.WriteFileAtomic(f, raw)
	}
	return c.Accel, c.Why, nil
}

// probe boots the probe initramfs (init prints a marker and powers off)
// and returns how long QEMU ran.
func (b *Backend) probe(ctx context.Context, qemuBin string, k vmboot.Kernel, accel string, timeout time.Duration) (time.Duration, error) {
	initrd, err := vmboot.ProbeInitramfs(b.cache)
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "libbox-probe-")
	if err != nil {
		return 0, errdefs.Wrap(errdefs.Internal, err, "probe dir")
	}
	defer os.RemoveAll(dir)
	console := filepath.Join(dir, "console.log")
	m := machineFor(accel)
	args := m.args(1, 128)
	args = append(args, "-nic", "none",
		"-kernel", k.Image, "-initrd", initrd, "-append", m.cmdline(nil),
		"-chardev", "file,id=con,path="+console, "-serial", "chardev:con")
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	out, err := runQEMU(ctx, dir, qemuBin, args)
	d := time.Since(start)
	if ctx.Err() != nil {
		return d, errdefs.New(errdefs.DeadlineExceeded, "%s boot did not power off within %s; console: %s", accel, timeout, oneLine(vmboot.ConsoleTail(dir, 5)))
	}
	if err != nil {
		return d, errdefs.New(errdefs.Unavailable, "qemu (%s): %v: %s", accel, err, oneLine(string(out)))
	}
	if b, _ := os.ReadFile(console); !strings.Contains(string(b), vmboot.ProbeMarker) {
		return d, errdefs.New(errdefs.Unavailable, "%s boot ended without running init; console: %s", accel, oneLine(vmboot.ConsoleTail(dir, 5)))
	}
	return d, nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[len(s)-300:]
	}
	return s
}
