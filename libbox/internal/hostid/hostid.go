// Package hostid hands out per-box slices of unprivileged host ids on a
// root host: the sandbox backend maps a box's user namespace onto its
// slice, and the VM backend runs the box's QEMU (and its helpers) as the
// slice's first uid. It only allocates and records; it never changes a
// process's credentials and never touches a box dir.
package hostid

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/internal/atomicfile"
)

// On a root host every box gets its own slice of host ids: in a sandbox,
// box uid 0..65535 is host uid Base..Base+65535 (the same for gids), so a
// process that escapes a mount is an unprivileged nobody on the host; a VM
// box's QEMU runs as the slice's first uid and gid. The slices come
// from root's entries in /etc/subuid and /etc/subgid when present, else
// from DefaultIDRange (inside the range systemd reserves for container
// ids, as podman's --userns=auto does). A slice stays with its box dir for
// the box's life (its upper dir's files carry those ids) and is reused only
// once the box dir is gone.
const (
	SliceSize = 65536
	// DefaultIDRange is used when root has no /etc/subuid entry:
	// 0x60000000 .. 0x6fffffff, 4096 slices.
	DefaultIDBase  = 0x60000000
	DefaultIDCount = 0x10000000
)

// Table is the host-wide allocation of slices: a JSON map from slice
// index to box dir, under an flock. It is host-wide, not per libbox home,
// because the ids are a host resource that every home shares.
var Table = "/var/lib/libbox/userns.json"

// Slice is one box's host id range: SliceSize uids from UID, SliceSize
// gids from GID.
type Slice struct {
	UID, GID uint32
	Index    uint32 // its place in the range
	Source   string // where the range comes from: "/etc/subuid" or "default range"
}

type idRange struct{ base, count uint32 }

// subRange reads root's range from a /etc/subuid-format file.
func subRange(path string) (idRange, bool) {
	f, err := os.Open(path)
	if err != nil {
		return idRange{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(parts) != 3 || (parts[0] != "root" && parts[0] != "0") {
			continue
		}
		base, err1 := strconv.ParseUint(parts[1], 10, 32)
		count, err2 := strconv.ParseUint(parts[2], 10, 32)
		if err1 == nil && err2 == nil && count >= SliceSize && base > 0 {
			return idRange{uint32(base), uint32(count)}, true
		}
	}
	return idRange{}, false
}

func hostRanges() (uids, gids idRange, source string) {
	u, okU := subRange("/etc/subuid")
	g, okG := subRange("/etc/subgid")
	if okU && okG {
		return u, g, "/etc/subuid"
	}
	def := idRange{DefaultIDBase, DefaultIDCount}
	return def, def, "default range"
}

// Alloc returns the slice of the box whose directory is dir, taking the
// lowest free one on first use, and a sentence that describes it. The slice
// of a box dir that no longer exists is free.
func Alloc(dir string) (Slice, string, error) {
	uids, gids, source := hostRanges()
	n := min(uids.count, gids.count) / SliceSize
	if err := os.MkdirAll(filepath.Dir(Table), 0o700); err != nil {
		return Slice{}, "", errdefs.Wrap(errdefs.Internal, err, "user namespace id table")
	}
	unlock, err := flock(Table + ".lock")
	if err != nil {
		return Slice{}, "", errdefs.Wrap(errdefs.Internal, err, "lock user namespace id table")
	}
	defer unlock()
	table := map[string]string{}
	if b, err := os.ReadFile(Table); err == nil {
		if err := json.Unmarshal(b, &table); err != nil {
			return Slice{}, "", errdefs.Wrap(errdefs.Internal, err, "user namespace id table %s is corrupt (remove it when no box runs)", Table)
		}
	}
	slice := func(idx uint32) (Slice, string, error) {
		s := Slice{UID: uids.base + idx*SliceSize, GID: gids.base + idx*SliceSize, Index: idx, Source: source}
		return s, fmt.Sprintf("box uid 0 = host uid %d, gid 0 = host gid %d (%d ids, slice %d of the %s)", s.UID, s.GID, SliceSize, idx, source), nil
	}
	// The box's own slice (a restart, a snapshot): nothing to write.
	for k, d := range table {
		if i, err := strconv.ParseUint(k, 10, 32); err == nil && d == dir && i < uint64(n) {
			return slice(uint32(i))
		}
	}
	// A new slice: the lowest one that is free or whose box dir is gone.
	// Only the slices below it are checked (one stat each), so the table
	// keeps the entries of removed boxes above it until they are reused:
	// it never holds more entries than the most boxes that lived at once.
	for k, d := range table {
		if _, err := strconv.ParseUint(k, 10, 32); err != nil || d == dir {
			delete(table, k)
		}
	}
	idx := uint32(0)
	for ; idx < n; idx++ {
		d, ok := table[strconv.FormatUint(uint64(idx), 10)]
		if !ok {
			break
		}
		if _, err := os.Stat(d); err != nil {
			break
		}
	}
	if idx >= n {
		return Slice{}, "", errdefs.New(errdefs.Unavailable, "no free user namespace id slice: %d boxes hold all of %s (add a larger root range to /etc/subuid and /etc/subgid)", n, source)
	}
	table[strconv.FormatUint(uint64(idx), 10)] = dir
	b, _ := json.Marshal(table)
	// Synced file, rename and directory: after a crash or a power loss the
	// table is the old one or the new one, never empty. A lost entry would
	// hand a running box's slice (its files' owners) to another box. Only
	// a new slice writes the table, so a start costs no flush otherwise.
	if err := atomicfile.WriteFile(Table, b, atomicfile.Options{Sync: true, SyncDir: true}); err != nil {
		return Slice{}, "", errdefs.Wrap(errdefs.Internal, err, "write user namespace id table")
	}
	return slice(idx)
}

func flock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
