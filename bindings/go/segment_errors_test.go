package dmxp

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// A missing segment matches ErrNotFound, as a missing channel does, and the operating
// system's error stays reachable (fs.ErrNotExist, *fs.PathError).
func TestMissingSegmentIsNotFound(t *testing.T) {
	name := fmt.Sprintf("/dmxp_gotest_missing_%d", os.Getpid())
	missingFile := testSegmentPath(t) // never created
	missingDir := filepath.Join(t.TempDir(), "no_such_dir", "seg")
	cases := []struct {
		what    string
		segment string
		call    func() error
	}{
		{"Open", "shm segment " + name, func() error { _, err := Open(name, nil); return err }},
		{"OpenPath", "file segment " + missingFile, func() error { _, err := OpenPath(missingFile, nil); return err }},
		{"OpenPath in a missing directory", "file segment " + missingDir,
			func() error { _, err := OpenPath(missingDir, nil); return err }},
		{"Unlink", "shm segment " + name, func() error { return Unlink(name) }},
	}
	for _, c := range cases {
		err := c.call()
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v (%T); want an error matching ErrNotFound", c.what, err, err)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v; want an error matching fs.ErrNotExist too", c.what, err)
		}
		var perr *fs.PathError
		if !errors.As(err, &perr) {
			t.Errorf("%s: %v; want the *fs.PathError reachable with errors.As", c.what, err)
		}
		var nf *SegmentNotFoundError
		if !errors.As(err, &nf) || nf.Segment != c.segment {
			t.Errorf("%s: %v; want a *SegmentNotFoundError naming %q", c.what, err, c.segment)
		}
		if errors.Is(err, ErrExists) || errors.Is(err, ErrUntrusted) || errors.Is(err, ErrNotReady) {
			t.Errorf("%s: %v matches an unrelated sentinel", c.what, err)
		}
	}
}

// OpenOrCreate still creates a missing segment: the not-found error stays internal.
func TestOpenOrCreatePathMissingCreates(t *testing.T) {
	path := testSegmentPath(t)
	seg, err := OpenOrCreatePath(path, &Options{Size: segmentSize(2)})
	if err != nil {
		t.Fatalf("OpenOrCreatePath(%s): %v", path, err)
	}
	defer os.Remove(path)
	defer seg.Close()
	if !seg.Created() {
		t.Errorf("OpenOrCreatePath of a missing path did not create it")
	}
}

// Creating over an existing segment matches ErrExists, as a strict channel create does, and
// fs.ErrExist (which OpenOrCreate relies on).
func TestExistingSegmentIsExists(t *testing.T) {
	seg := newTestSegment(t, segmentSize(2))
	path := seg.Path()
	_, err := CreatePath(path, &Options{Size: segmentSize(2)})
	if !errors.Is(err, ErrExists) || !errors.Is(err, fs.ErrExist) {
		t.Fatalf("CreatePath over a segment: %v (%T); want ErrExists and fs.ErrExist", err, err)
	}
	var ex *SegmentExistsError
	if !errors.As(err, &ex) || ex.Segment != "file segment "+path {
		t.Errorf("CreatePath over a segment: %v; want a *SegmentExistsError naming the path", err)
	}
	if errors.Is(err, ErrNotFound) {
		t.Errorf("CreatePath over a segment: %v matches ErrNotFound", err)
	}
	// The existing segment is untouched: it still opens.
	again, err := OpenPath(path, nil)
	if err != nil {
		t.Fatalf("OpenPath after the refused create: %v", err)
	}
	again.Close()

	name := fmt.Sprintf("/dmxp_gotest_exists_%d", os.Getpid())
	shm, err := Create(name, &Options{Size: segmentSize(2)})
	if err != nil {
		t.Fatalf("Create(%s): %v", name, err)
	}
	defer Unlink(name)
	defer shm.Close()
	if _, err := Create(name, &Options{Size: segmentSize(2)}); !errors.Is(err, ErrExists) || !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over %s: %v; want ErrExists and fs.ErrExist", name, err)
	}
}

// A missing channel matches ErrNotFound but is no operating-system error.
func TestMissingChannelIsNotFound(t *testing.T) {
	seg := newTestSegment(t, segmentSize(2))
	_, err := seg.OpenChannel(3)
	if !errors.Is(err, ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenChannel(3): %v; want ErrNotFound, not fs.ErrNotExist", err)
	}
}
