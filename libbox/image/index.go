package image

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/libbox/libbox/errdefs"
	"github.com/libbox/libbox/libbox/internal/atomicfile"
)

// record is one entry of index.json: a reference (for one platform) and the
// image it resolved to.
type record struct {
	Ref      string    `json:"ref"`
	Platform string    `json:"platform"`
	ID       string    `json:"id"`
	Manifest string    `json:"manifest,omitempty"` // digest of the manifest, registry/layout sources
	Layers   []string  `json:"layers,omitempty"`   // blob digests, in order
	Config   Config    `json:"config"`
	Size     int64     `json:"size"`
	Created  time.Time `json:"created"`
}

type indexFile struct {
	Version int      `json:"version"`
	Images  []record `json:"images"`
}

const indexVersion = 1

func (s *Store) indexPath() string { return filepath.Join(s.dir, "index.json") }

// readIndex returns the current records. Writers replace the file by
// rename, so a reader never sees a partial file.
func (s *Store) readIndex() ([]record, error) {
	b, err := os.ReadFile(s.indexPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "read image index")
	}
	var f indexFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err,
			"image index %s is corrupted: remove it and pull the images again", s.indexPath())
	}
	return f.Images, nil
}

// updateIndex applies fn to the records under the index lock and writes the
// result atomically.
func (s *Store) updateIndex(fn func([]record) ([]record, error)) error {
	unlock, err := lockFile(filepath.Join(s.dir, "index.lock"), true, true)
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "lock image index")
	}
	defer unlock()
	recs, err := s.readIndex()
	if err != nil {
		return err
	}
	recs, err = fn(recs)
	if err != nil {
		return err
	}
	sort.Slice(recs, func(i, j int) bool {
		if recs[i].Ref != recs[j].Ref {
			return recs[i].Ref < recs[j].Ref
		}
		return recs[i].Platform < recs[j].Platform
	})
	b, err := json.MarshalIndent(indexFile{Version: indexVersion, Images: recs}, "", "  ")
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "encode image index")
	}
	if err := atomicfile.WriteFile(s.indexPath(), b, atomicfile.Options{Perm: 0o644, Sync: true, TmpDir: s.tmpDir()}); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "write image index")
	}
	return nil
}
