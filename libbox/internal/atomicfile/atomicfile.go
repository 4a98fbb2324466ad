// Package atomicfile replaces files whole: a reader, or this process after
// a crash at any point, sees the old content or the new, never a part.
package atomicfile

import (
	"io"
	"os"
	"path/filepath"
)

// Options says how Write makes and keeps the new file.
type Options struct {
	// Perm is the new file's mode, set with chmod (the umask does not
	// apply). 0 means 0o600.
	Perm os.FileMode
	// Sync fsyncs the file before the rename: without it, after a power
	// loss some file systems may show the rename but not the data (an
	// empty file).
	Sync bool
	// SyncDir also fsyncs the directory after the rename (about a
	// millisecond here), so the rename itself survives a power loss once
	// Write returns: for files whose loss would hand out something twice.
	SyncDir bool
	// TmpDir is where the temp file is made (on path's file system);
	// "" means path's directory, with a name starting with a dot.
	TmpDir string
}

// Write replaces path with what fill writes into a temp file, renamed over
// path. The temp file is removed when anything fails.
func Write(path string, o Options, fill func(io.Writer) error) error {
	dir := o.TmpDir
	if dir == "" {
		dir = filepath.Dir(path)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	perm := o.Perm
	if perm == 0 {
		perm = 0o600
	}
	err = fill(tmp)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil && (o.Sync || o.SyncDir) {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil || !o.SyncDir {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteFile is Write of data.
func WriteFile(path string, data []byte, o Options) error {
	return Write(path, o, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}
