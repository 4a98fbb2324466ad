package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/libbox/libbox/errdefs"
)

// Downloads. A blob is written to partial/<hex> under a per-blob flock held
// by one process at a time; the others wait for the lock and then find the
// blob cached, so concurrent pulls in separate processes download it once.
// An interrupted download leaves its partial file: the next attempt (a
// retry of this pull, or a later pull) re-hashes those bytes and asks the
// registry for the rest with an HTTP range request; a source that cannot
// resume sends everything again. Only bytes matching the digest enter the
// cache.

// Retries of one blob download: attempts and the first pause (doubling).
const (
	downloadAttempts = 4
	retryPause       = 250 * time.Millisecond
	lockPoll         = 50 * time.Millisecond
)

// opener opens a blob for reading from offset; it returns the reader and
// the offset it actually starts at (0 when the source cannot resume).
type opener func(ctx context.Context, offset int64) (io.ReadCloser, int64, error)

// whole adapts a source that can only send a blob from its start.
func whole(open func() (io.ReadCloser, error)) opener {
	return func(context.Context, int64) (io.ReadCloser, int64, error) {
		rc, err := open()
		return rc, 0, err
	}
}

func (s *Store) partialDir() string { return filepath.Join(s.dir, "partial") }

// ensureBlob returns the cache path of blob d, fetching it unless cached.
// Concurrent requests for one blob share one download, within this process
// (one flight) and across processes (the blob's lock).
func (s *Store) ensureBlob(ctx context.Context, d v1.Hash, size int64, open opener,
	report func(Progress), origin string) (string, error) {
	final := s.blobPath(d)
	if fi, err := os.Stat(final); err == nil {
		if report != nil {
			report(Progress{Layer: d.String(), Done: fi.Size(), Total: fi.Size()})
		}
		return final, nil
	}
	if d.Algorithm != "sha256" {
		return "", errdefs.New(errdefs.Unsupported, "blob %s: only sha256 digests are supported", d)
	}
	if report == nil {
		report = func(Progress) {}
	}
	_, err := s.fl.do(ctx, "blob\x00"+d.String(), report, func(ctx context.Context, report func(Progress)) (any, error) {
		unlock, err := s.lockBlob(ctx, d, size, report)
		if err != nil {
			return nil, err
		}
		defer unlock()
		if _, err := os.Stat(final); err == nil {
			return nil, nil // another process fetched it meanwhile
		}
		return nil, s.download(ctx, d, size, open, report, origin)
	})
	if err != nil {
		return "", err
	}
	return final, nil
}

// lockBlob takes the cross-process lock of blob d, waiting (and reporting
// the holder's progress from the size of its partial file) while another
// process downloads it.
func (s *Store) lockBlob(ctx context.Context, d v1.Hash, size int64, report func(Progress)) (func(), error) {
	if err := os.MkdirAll(s.partialDir(), 0o755); err != nil {
		return nil, errdefs.Wrap(errdefs.Internal, err, "create %s", s.partialDir())
	}
	lock := filepath.Join(s.partialDir(), d.Hex+".lock")
	part := filepath.Join(s.partialDir(), d.Hex)
	t := time.NewTicker(lockPoll)
	defer t.Stop()
	for {
		unlock, err := lockFile(lock, true, false)
		if err == nil {
			return unlock, nil
		}
		if !errors.Is(err, errLocked) {
			return nil, errdefs.Wrap(errdefs.Internal, err, "lock blob %s", d)
		}
		if fi, err := os.Stat(part); err == nil {
			report(Progress{Layer: d.String(), Done: fi.Size(), Total: size})
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for blob %s: %w", d, ctx.Err())
		case <-t.C:
		}
	}
}

// download fetches blob d into the cache, resuming a partial file, and
// retrying interrupted transfers a few times with growing pauses. The
// caller holds the blob's lock.
func (s *Store) download(ctx context.Context, d v1.Hash, size int64, open opener,
	report func(Progress), origin string) error {
	part := filepath.Join(s.partialDir(), d.Hex)
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "create %s", part)
	}
	defer f.Close()
	h := sha256.New()
	have, err := io.Copy(h, f) // what an earlier attempt left
	if err != nil || size >= 0 && have > size {
		if err := restart(f, h); err != nil {
			return errdefs.Wrap(errdefs.Internal, err, "reset %s", part)
		}
		have = 0
	}
	report(Progress{Layer: d.String(), Done: have, Total: size})
	pause := retryPause
	for attempt := 1; ; attempt++ {
		err = s.fetchRest(ctx, f, h, &have, size, d, open, report)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("fetch blob %s: %w", d, ctx.Err())
		}
		if !transient(err) {
			return s.blobError(ctx, err, d, origin)
		}
		if attempt == downloadAttempts {
			return errdefs.Wrap(errdefs.Unavailable, scrub(err),
				"download of blob %s from %s was interrupted (%d of %s bytes kept, %d attempts): pull again to resume",
				d, origin, have, sizeString(size), attempt)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fetch blob %s: %w", d, ctx.Err())
		case <-time.After(pause):
		}
		pause *= 2
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.String() {
		os.Remove(part)
		return errdefs.New(errdefs.Internal, "blob %s from %s is corrupted (its content hashes to %s): pull again; if it persists the source is damaged",
			d, origin, got)
	}
	report(Progress{Layer: d.String(), Done: have, Total: have})
	if err := f.Sync(); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "store blob %s", d)
	}
	if err := os.Rename(part, s.blobPath(d)); err != nil {
		return errdefs.Wrap(errdefs.Internal, err, "store blob %s", d)
	}
	return nil
}

func sizeString(size int64) string {
	if size < 0 {
		return "?"
	}
	return strconv.FormatInt(size, 10)
}

func restart(f *os.File, h hash.Hash) error {
	h.Reset()
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}

// fetchRest appends the blob's bytes from *have on to f (and h); when the
// source restarts from 0, f and h start over.
func (s *Store) fetchRest(ctx context.Context, f *os.File, h hash.Hash, have *int64, size int64, d v1.Hash,
	open opener, report func(Progress)) error {
	if size >= 0 && *have == size {
		return nil
	}
	rc, start, err := open(ctx, *have)
	if err != nil {
		return err
	}
	defer rc.Close()
	if start != *have {
		if err := restart(f, h); err != nil {
			return err
		}
		*have = 0
	}
	pw := &progressWriter{ctx: ctx, h: h, layer: d.String(), total: size, done: *have, last: *have, report: report}
	n, err := io.Copy(io.MultiWriter(f, pw), rc)
	*have += n
	if err != nil {
		return err
	}
	if size >= 0 && *have < size {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// transient reports whether err is an interrupted transfer worth retrying:
// a dropped or refused connection, a timeout, or a registry's 5xx / 429.
func transient(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return false // the cache's file system is full: retrying cannot help
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests
	}
	var plain *errPlainHTTP
	if errors.As(err, &plain) || isCertError(err) {
		return false
	}
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		errors.As(err, &ne) || strings.Contains(err.Error(), "connection reset") ||
		strings.Contains(err.Error(), "server closed") || strings.Contains(err.Error(), "GOAWAY")
}

// blobError classifies a failure fetching blob d, naming it.
func (s *Store) blobError(ctx context.Context, err error, d v1.Hash, origin string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("fetch blob %s: %w", d, ctx.Err())
	}
	if errdefs.CodeOf(err) != errdefs.Internal {
		return err // already classified
	}
	rerr := s.registryError(ctx, err, origin, d.String())
	if errdefs.CodeOf(rerr) != errdefs.Internal {
		return rerr
	}
	return errdefs.Wrap(errdefs.Internal, scrub(err), "blob %s from %s could not be read: pull again", d, origin)
}

// progressWriter hashes what it is given and reports progress, at most
// every 256 KiB; it also stops the copy once ctx is done.
type progressWriter struct {
	ctx    context.Context
	h      hash.Hash
	layer  string
	total  int64
	done   int64
	last   int64
	report func(Progress)
}

func (w *progressWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	w.h.Write(p)
	w.done += int64(len(p))
	if w.done-w.last >= 256<<10 {
		w.last = w.done
		w.report(Progress{Layer: w.layer, Done: w.done, Total: w.total})
	}
	return len(p), nil
}

// blobFetcher fetches the blobs of one repository itself, so that it can
// ask for the rest of a blob (HTTP Range) after an interruption.
type blobFetcher struct {
	s    *Store
	repo name.Repository

	mu sync.Mutex
	// rt is the authenticated transport, made on first use; guarded by mu.
	rt http.RoundTripper
}

func (b *blobFetcher) transport(ctx context.Context) (http.RoundTripper, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rt != nil {
		return b.rt, nil
	}
	auth, err := authn.Resolve(ctx, b.s.keychain(), b.repo)
	if err != nil {
		return nil, err
	}
	rt, err := transport.NewWithContext(ctx, b.repo.Registry, auth, b.s.transport, []string{b.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, err
	}
	b.rt = rt
	return rt, nil
}

// opener returns an opener of blob d (of size bytes, -1 if unknown) that
// resumes with a range request.
func (b *blobFetcher) opener(d v1.Hash, size int64) opener {
	return func(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
		rt, err := b.transport(ctx)
		if err != nil {
			return nil, 0, err
		}
		u := url.URL{Scheme: b.repo.Scheme(), Host: b.repo.RegistryStr(),
			Path: fmt.Sprintf("/v2/%s/blobs/%s", b.repo.RepositoryStr(), d)}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, 0, err
		}
		if offset > 0 {
			end := ""
			if size > 0 {
				end = strconv.FormatInt(size-1, 10)
			}
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%s", offset, end))
		}
		resp, err := (&http.Client{Transport: rt}).Do(req)
		if err != nil {
			return nil, 0, err
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			return resp.Body, 0, nil
		case resp.StatusCode == http.StatusPartialContent && offset > 0 && rangeStart(resp) == offset:
			return resp.Body, offset, nil
		case resp.StatusCode == http.StatusPartialContent || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
			// A range we did not ask for, or a partial file longer than
			// the blob: start over, without a range.
			resp.Body.Close()
			return b.opener(d, size)(ctx, 0)
		}
		defer resp.Body.Close()
		return nil, 0, transport.CheckError(resp, http.StatusOK)
	}
}

// rangeStart returns the first byte of a 206 response ("bytes 100-199/200").
func rangeStart(resp *http.Response) int64 {
	cr := strings.TrimPrefix(resp.Header.Get("Content-Range"), "bytes ")
	first, _, ok := strings.Cut(cr, "-")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// scrubbed hides query strings (pre-signed URLs carry credentials there)
// from an error's text while keeping it inspectable with errors.As.
type scrubbed struct{ err error }

func (e scrubbed) Error() string { return scrubText(e.err.Error()) }
func (e scrubbed) Unwrap() error { return e.err }

func scrub(err error) error {
	if err == nil {
		return nil
	}
	return scrubbed{err}
}

// scrubText removes the query of every URL in s.
func scrubText(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			break
		}
		end := strings.IndexAny(s[i:], " \t\n\"'")
		if end < 0 {
			end = len(s) - i
		}
		u := s[i : i+end]
		if q := strings.IndexAny(u, "?#"); q >= 0 {
			u = u[:q] + "?…"
		}
		b.WriteString(s[:i])
		b.WriteString(u)
		s = s[i+end:]
	}
	b.WriteString(s)
	return b.String()
}
