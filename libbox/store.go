package libbox

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/backend"
	"github.com/libbox/libbox/libbox/internal/atomicfile"
)

// boxConfig is fixed at creation (boxes/<id>/config.json).
type boxConfig struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Image    string `json:"image"`
	ImageID  string `json:"image_id"`
	Platform string `json:"platform,omitempty"`
	// The image's command, for Command.UseImageCmd.
	ImageEntrypoint []string         `json:"image_entrypoint,omitempty"`
	ImageCmd        []string         `json:"image_cmd,omitempty"`
	Isolation       string           `json:"isolation"`
	CPUs            int              `json:"cpus,omitempty"`
	MemoryMiB       int              `json:"memory_mib,omitempty"`
	Env             []string         `json:"env,omitempty"`
	WorkingDir      string           `json:"working_dir,omitempty"`
	User            string           `json:"user,omitempty"`
	Network         Network          `json:"network,omitzero"`
	Volumes         []backend.Volume `json:"volumes,omitempty"`
	AutoRemove      bool             `json:"auto_remove,omitempty"`
	Detach          bool             `json:"detach,omitempty"`
	ColdBoot        bool             `json:"cold_boot,omitempty"`
	CreatedAt       time.Time        `json:"created_at"`
}

// boxState changes with the box (boxes/<id>/state.json).
type boxState struct {
	State     string          `json:"state"`
	StartedAt time.Time       `json:"started_at,omitzero"`
	StoppedAt time.Time       `json:"stopped_at,omitzero"`
	Instance  json.RawMessage `json:"instance,omitempty"` // backend.Instance.State
	Error     string          `json:"error,omitempty"`    // why it last stopped, if not asked to
	// Base is the snapshot the box's writable layer sits on (empty: the
	// image); see snapshot.go.
	Base string `json:"base,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeJSONAtomic writes v to path through a temp file and rename, so a
// reader (or a crash of this process at any point) sees the old file or the
// new one, never a part of one. durable also fsyncs the file before the
// rename, which a power loss needs: without it some file systems may show
// the rename but not the data (an empty file) after a reboot. The store
// asks for it where an unreadable file would lose something; see
// writeState.
func writeJSONAtomic(path string, v any, durable bool) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), atomicfile.Options{Sync: durable})
}

// writeState writes a box's state.json. It is fsynced only when the box
// sits on a snapshot (Base): that is the one thing in it a reader cannot
// do without. Everything else is recovered from nothing: an unreadable
// state.json reads as a stopped box on its image (Runtime.open), a state
// that says running is checked against the process (refreshLocked), and
// no box process outlives a power loss, the only crash after which the
// unsynced file may read empty. So the common start, stop and remove
// transitions cost no disk flush.
func writeState(dir string, st *boxState) error {
	return writeJSONAtomic(filepath.Join(dir, "state.json"), st, st.Base != "")
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// storeLock serializes name allocation and removal across processes
// sharing one home.
func (r *Runtime) storeLock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(r.boxesDir(), ".lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "lock box store")
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, errdefs.Wrap(errdefs.Internal, err, "lock box store")
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

func (r *Runtime) boxesDir() string        { return filepath.Join(r.home, "boxes") }
func (r *Runtime) boxDir(id string) string { return filepath.Join(r.boxesDir(), id) }

// loadConfigs reads every box config of the home.
func (r *Runtime) loadConfigs() ([]boxConfig, error) {
	ents, err := os.ReadDir(r.boxesDir())
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "read box store")
	}
	var out []boxConfig
	for _, e := range ents {
		if !e.IsDir() || e.Name()[0] == '.' {
			continue
		}
		var c boxConfig
		if err := readJSON(filepath.Join(r.boxesDir(), e.Name(), "config.json"), &c); err != nil {
			continue // half-created or half-removed; ignored
		}
		out = append(out, c)
	}
	return out, nil
}

// resolve finds a box config by exact id, name, or unique id prefix.
func (r *Runtime) resolve(idOrName string) (boxConfig, error) {
	if idOrName == "" {
		return boxConfig{}, errdefs.New(errdefs.InvalidArgument, "box id or name is empty")
	}
	// A full id is the common case (every handle holds one): read that
	// box's config alone instead of every box's.
	var c boxConfig
	if filepath.Base(idOrName) == idOrName && readJSON(filepath.Join(r.boxesDir(), idOrName, "config.json"), &c) == nil && c.ID == idOrName {
		return c, nil
	}
	cfgs, err := r.loadConfigs()
	if err != nil {
		return boxConfig{}, err
	}
	var prefix []boxConfig
	for _, c := range cfgs {
		if c.ID == idOrName || c.Name == idOrName {
			return c, nil
		}
		if len(idOrName) >= 4 && len(c.ID) > len(idOrName) && c.ID[:len(idOrName)] == idOrName {
			prefix = append(prefix, c)
		}
	}
	if len(prefix) == 1 {
		return prefix[0], nil
	}
	if len(prefix) > 1 {
		return boxConfig{}, errdefs.New(errdefs.InvalidArgument, "box id prefix %q is ambiguous (%d boxes)", idOrName, len(prefix))
	}
	return boxConfig{}, errdefs.New(errdefs.NotFound, "no box named %q (the boxes of this home are listed by `box ls -a`)", idOrName)
}

func removeBoxDir(dir string) error {
	// The agent socket and mount points are plain files by now. A process
	// that still followed the box may write one last file meanwhile: retry.
	err := os.RemoveAll(dir)
	for i := 0; i < 5 && err != nil && errors.Is(err, syscall.ENOTEMPTY); i++ {
		time.Sleep(20 * time.Millisecond)
		err = os.RemoveAll(dir)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
