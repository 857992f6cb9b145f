package dmxp

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The attach-trust rules of PROTOCOL.md §3.4.

const nobody = 65534 // the uid and gid the tests give objects to

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test gives a segment to uid 65534 (chown), which only root may do")
	}
}

func requireShm(t *testing.T) {
	t.Helper()
	if st, err := os.Stat(shmDir); err != nil || !st.IsDir() {
		t.Skip("no /dev/shm")
	}
}

var trustSeq uint64

// trustShmName is a fresh shm name, removed when the test ends.
func trustShmName(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("/dmxp_gotest_trust_%d_%d", os.Getpid(), atomic.AddUint64(&trustSeq, 1))
	t.Cleanup(func() { os.Remove(shmDir + name) })
	return name
}

// createShm creates and formats the shm segment name with the package's own Create, then
// closes it, leaving the object in /dev/shm.
func createShm(t *testing.T, name string, opts *Options) string {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	opts.Size = segmentSize(2)
	seg, err := Create(name, opts)
	if err != nil {
		t.Fatalf("Create(%s): %v", name, err)
	}
	mustChannel(t, seg, 0, 2)
	seg.Close()
	return shmDir + name
}

type opener struct {
	what string
	open func(opts *Options) (*Segment, error)
}

// shmOpeners are the attaching entry points for a shm name: Open and OpenOrCreate.
func shmOpeners(name string) []opener {
	return []opener{
		{"Open", func(o *Options) (*Segment, error) { return Open(name, o) }},
		{"OpenOrCreate", func(o *Options) (*Segment, error) { return OpenOrCreate(name, withSize(o)) }},
	}
}

// fileOpeners are OpenPath and OpenOrCreatePath for a file path.
func fileOpeners(path string) []opener {
	return []opener{
		{"OpenPath", func(o *Options) (*Segment, error) { return OpenPath(path, o) }},
		{"OpenOrCreatePath", func(o *Options) (*Segment, error) { return OpenOrCreatePath(path, withSize(o)) }},
	}
}

func withSize(o *Options) *Options {
	c := Options{}
	if o != nil {
		c = *o
	}
	c.Size = segmentSize(2)
	c.Timeout = 200 * time.Millisecond
	return &c
}

// wantUntrusted checks that err is an *UntrustedError of reason matching ErrUntrusted whose
// message contains every one of parts.
func wantUntrusted(t *testing.T, what string, seg *Segment, err error, reason UntrustedReason, parts ...string) *UntrustedError {
	t.Helper()
	if err == nil {
		seg.Close()
		t.Errorf("%s: attached; want ErrUntrusted", what)
		return nil
	}
	var e *UntrustedError
	if !errors.Is(err, ErrUntrusted) || !errors.As(err, &e) {
		t.Errorf("%s: %v; want ErrUntrusted", what, err)
		return nil
	}
	if e.Reason != reason {
		t.Errorf("%s: reason %d, want %d: %v", what, e.Reason, reason, err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %q does not say %q", what, err.Error(), p)
		}
	}
	return e
}

func wantAttached(t *testing.T, what string, seg *Segment, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v; want an attach", what, err)
		return
	}
	defer seg.Close()
	if seg.Created() {
		t.Errorf("%s: created a segment; want an attach to the existing one", what)
	}
	if _, err := seg.OpenChannel(0); err != nil {
		t.Errorf("%s: channel 0 of the existing segment: %v", what, err)
	}
}

func statOf(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// A segment of uid 65534 with mode 0666 is refused by default, and by either opt-in alone;
// the two together attach. The object is left as it was.
func TestUntrustedOwnerAndModeRefused(t *testing.T) {
	requireRoot(t)
	requireShm(t)
	name := trustShmName(t)
	path := createShm(t, name, nil)
	if err := os.Chown(path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	euid := fmt.Sprintf("expected owner uid %d ", os.Geteuid())
	for _, o := range shmOpeners(name) {
		seg, err := o.open(nil)
		e := wantUntrusted(t, o.what+" (default policy)", seg, err, UntrustedOwnerOrMode,
			"shm segment "+name, "owned by uid 65534", "mode 0666", euid, "a mode within 0600",
			"Trust.Owners [65534]", "Mode 0666")
		if e != nil && (e.Owner != nobody || e.Mode != 0o666 || e.Asked != 0o600) {
			t.Errorf("%s: owner %d mode %#o asked %#o", o.what, e.Owner, e.Mode, e.Asked)
		}

		// Trusting the owner does not widen the mode.
		seg, err = o.open(&Options{Trust: Trust{Owners: []int{nobody}}})
		wantUntrusted(t, o.what+" (owner trusted, mode 0600)", seg, err, UntrustedOwnerOrMode,
			"owned by uid 65534", "mode 0666", "a mode within 0600")
		// Nor does asking for the mode trust the owner.
		seg, err = o.open(&Options{Mode: 0o666})
		wantUntrusted(t, o.what+" (mode 0666, owner not trusted)", seg, err, UntrustedOwnerOrMode,
			"owned by uid 65534", "a mode within 0666", "Trust.Owners [65534]")

		seg, err = o.open(&Options{Mode: 0o666, Trust: Trust{Owners: []int{nobody}}})
		wantAttached(t, o.what+" (owner 65534 trusted, mode 0666)", seg, err)
	}
	if st := statOf(t, path); st.Uid != nobody || st.Gid != nobody || st.Mode&0o7777 != 0o666 || st.Size != segmentSize(2) {
		t.Errorf("the object changed: uid %d gid %d mode %#o size %d", st.Uid, st.Gid, st.Mode&0o7777, st.Size)
	}
}

// A 0660 segment of our own is refused by default (the mode grants the group) and accepted
// with group access; a segment of another owner is accepted through its group only with
// group access, and only for the group asked for.
func TestGroupModeNeedsGroupAccess(t *testing.T) {
	requireShm(t)
	name := trustShmName(t)
	path := createShm(t, name, &Options{Mode: 0o660})
	if st := statOf(t, path); st.Mode&0o7777 != 0o660 || int(st.Uid) != os.Geteuid() {
		t.Fatalf("created with mode %#o, uid %d", st.Mode&0o7777, st.Uid)
	}
	group := &Options{Trust: Trust{GroupAccess: true}}
	for _, o := range shmOpeners(name) {
		seg, err := o.open(nil)
		wantUntrusted(t, o.what+" (default policy)", seg, err, UntrustedOwnerOrMode,
			"mode 0660", "a mode within 0600", "Mode 0660")
		seg, err = o.open(group)
		wantAttached(t, o.what+" (group access)", seg, err)
	}

	if os.Geteuid() != 0 {
		t.Log("not root: skipping the part with a segment of uid 65534")
		return
	}
	// Another owner, our group: trusted through the group only.
	egid := os.Getegid()
	if err := os.Chown(path, nobody, egid); err != nil {
		t.Fatal(err)
	}
	other := nobody
	for _, o := range shmOpeners(name) {
		seg, err := o.open(&Options{Mode: 0o660})
		wantUntrusted(t, o.what+" (mode 0660, no group access)", seg, err, UntrustedOwnerOrMode, "owned by uid 65534")
		seg, err = o.open(&Options{Trust: Trust{GID: &other}})
		wantUntrusted(t, o.what+" (group 65534 named)", seg, err, UntrustedOwnerOrMode,
			fmt.Sprintf("group %d,", egid), "or group 65534")
		seg, err = o.open(group)
		wantAttached(t, o.what+" (group access, our group)", seg, err)
		seg, err = o.open(&Options{Trust: Trust{GID: &egid}})
		wantAttached(t, o.what+" (our group named)", seg, err)
	}

	// Creating with a named group gives the new object to it, with mode 0660.
	created := trustShmName(t)
	seg, err := Create(created, &Options{Size: segmentSize(2), Trust: Trust{GID: &other}})
	if err != nil {
		t.Fatal(err)
	}
	seg.Close()
	if st := statOf(t, shmDir+created); st.Gid != nobody || st.Mode&0o7777 != GroupMode {
		t.Errorf("created with group %d mode %#o; want group 65534 mode 0660", st.Gid, st.Mode&0o7777)
	}
}

func checksum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// A symbolic link at a file segment's path is never followed: attaching refuses it and
// creating fails as for any existing name, so the (owner-only) file it points to keeps its
// bytes and no file appears where a dangling link points.
func TestSymlinkAtFilePathRefused(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "owner-only")
	seg, err := CreatePath(target, &Options{Size: segmentSize(2)})
	if err != nil {
		t.Fatal(err)
	}
	mustChannel(t, seg, 0, 2)
	seg.Close()
	before := checksum(t, target)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, o := range fileOpeners(link) {
		seg, err := o.open(nil)
		wantUntrusted(t, o.what, seg, err, UntrustedSymlink, "file segment "+link, "is a symbolic link")
		// An opt-in to other owners and wide modes does not make a link acceptable.
		seg, err = o.open(&Options{Mode: 0o777, Trust: Trust{Owners: []int{nobody}, GroupAccess: true}})
		wantUntrusted(t, o.what+" (all opt-ins)", seg, err, UntrustedSymlink, "is a symbolic link")
	}
	if seg, err := CreatePath(link, &Options{Size: segmentSize(2)}); !errors.Is(err, os.ErrExist) {
		if err == nil {
			seg.Close()
		}
		t.Errorf("CreatePath(link): %v; want ErrExist", err)
	}
	if after := checksum(t, target); after != before {
		t.Errorf("the link's target changed")
	}
	if st := statOf(t, link); st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Errorf("the link was replaced")
	}

	// A dangling link: nothing is created through it.
	absent := filepath.Join(dir, "absent")
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(absent, dangling); err != nil {
		t.Fatal(err)
	}
	if seg, err := CreatePath(dangling, &Options{Size: segmentSize(2)}); !errors.Is(err, os.ErrExist) {
		if err == nil {
			seg.Close()
		}
		t.Errorf("CreatePath(dangling link): %v; want ErrExist", err)
	}
	seg, err = OpenOrCreatePath(dangling, withSize(nil))
	wantUntrusted(t, "OpenOrCreatePath(dangling link)", seg, err, UntrustedSymlink, "is a symbolic link")
	if _, err := os.Lstat(absent); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file was created through the dangling link: %v", err)
	}
}

// A file segment in a directory writable by others is refused unless the directory is
// sticky.
func TestParentDirectoryTrust(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "seg")
	seg, err := CreatePath(path, &Options{Size: segmentSize(2)})
	if err != nil {
		t.Fatal(err)
	}
	mustChannel(t, seg, 0, 2)
	seg.Close()
	fresh := filepath.Join(dir, "fresh")

	if err := syscall.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, o := range fileOpeners(path) {
		seg, err := o.open(nil)
		wantUntrusted(t, o.what+" (directory 0777)", seg, err, UntrustedDirectory,
			"file segment "+path, "writable by others without the sticky bit", "mode 0777")
	}
	seg, err = CreatePath(fresh, &Options{Size: segmentSize(2)})
	wantUntrusted(t, "CreatePath (directory 0777)", seg, err, UntrustedDirectory, "mode 0777")
	if _, err := os.Lstat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CreatePath made a file in the 0777 directory: %v", err)
	}

	if err := syscall.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	for _, o := range fileOpeners(path) {
		seg, err := o.open(nil)
		wantAttached(t, o.what+" (directory 01777)", seg, err)
	}
	seg, err = CreatePath(fresh, &Options{Size: segmentSize(2)})
	if err != nil {
		t.Fatalf("CreatePath (directory 01777): %v", err)
	}
	seg.Close()
}

// Anything but a regular file is refused at once, before it is mapped.
func TestNotRegularFileRefused(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, o := range fileOpeners(fifo) {
		started := time.Now()
		seg, err := o.open(&Options{Timeout: 5 * time.Second})
		wantUntrusted(t, o.what, seg, err, UntrustedNotRegular, "not a regular file", "a FIFO")
		if time.Since(started) > 2*time.Second {
			t.Errorf("%s: waited %v before refusing a FIFO", o.what, time.Since(started))
		}
	}
}

// Names that break the rules fail with ErrInvalidArgument before any system call: even
// when an object exists under that spelling, it is neither opened nor replaced.
func TestNamesRefusedBeforeOpening(t *testing.T) {
	requireShm(t)
	long := fmt.Sprintf("dmxp_gotest_long_%d_", os.Getpid())
	long += strings.Repeat("x", 255-len(long))
	planted := []string{
		fmt.Sprintf("dmxp_gotest_nl_%d\nx", os.Getpid()),
		fmt.Sprintf("dmxp_gotest_del_%d\x7fx", os.Getpid()),
		long, // 255 bytes after the "/"
	}
	// Put a valid segment under each bad spelling, so that only the name check stops an open.
	for _, bad := range planted {
		bad := bad
		good := trustShmName(t)
		createShm(t, good, nil)
		if err := os.Rename(shmDir+good, shmDir+"/"+bad); err != nil {
			t.Fatalf("rename to %q: %v", bad, err)
		}
		t.Cleanup(func() { os.Remove(shmDir + "/" + bad) })
	}
	names := []string{"", "/", "x", "a/b", "/a/b", "//x", "/a\x00b", "/a\tb"}
	for _, bad := range planted {
		names = append(names, "/"+bad)
	}
	for _, name := range names {
		checks := map[string]error{}
		_, checks["ShmPath"] = ShmPath(name)
		_, checks["Open"] = Open(name, nil)
		_, checks["OpenOrCreate"] = OpenOrCreate(name, nil)
		_, checks["Create"] = Create(name, &Options{Size: segmentSize(2)})
		checks["Unlink"] = Unlink(name)
		for what, err := range checks {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("%s(%q): %v; want ErrInvalidArgument", what, name, err)
			}
		}
	}
	for _, bad := range planted {
		if _, err := os.Lstat(shmDir + "/" + bad); err != nil {
			t.Errorf("the object planted at %q is gone: %v", bad, err)
		}
	}
	// The longest valid name: 254 bytes after the "/".
	longest := "/" + long[:MaxShmNameLen]
	t.Cleanup(func() { os.Remove(shmDir + longest) })
	seg, err := Create(longest, &Options{Size: segmentSize(2)})
	if err != nil {
		t.Fatalf("Create(254-byte name): %v", err)
	}
	seg.Close()

	// File paths: no control characters.
	dir := t.TempDir()
	seg, err = CreatePath(filepath.Join(dir, "seg"), &Options{Size: segmentSize(2)})
	if err != nil {
		t.Fatal(err)
	}
	seg.Close()
	newline := filepath.Join(dir, "seg\nx")
	if err := os.Rename(filepath.Join(dir, "seg"), newline); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{newline, filepath.Join(dir, "seg\x7f"), filepath.Join(dir, "a\x00b"), ""} {
		checks := map[string]error{}
		_, checks["OpenPath"] = OpenPath(path, nil)
		_, checks["OpenOrCreatePath"] = OpenOrCreatePath(path, withSize(nil))
		_, checks["CreatePath"] = CreatePath(path, &Options{Size: segmentSize(2)})
		for what, err := range checks {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("%s(%q): %v; want ErrInvalidArgument", what, path, err)
			}
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "seg\x7f")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file with a control character in its name was created: %v", err)
	}
}

// Settings that can never be right fail before any system call.
func TestTrustOptionsValidated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seg")
	negative := -1
	for what, opts := range map[string]*Options{
		"mode 01666":       {Mode: 0o1666},
		"negative owner":   {Trust: Trust{Owners: []int{-5}}},
		"negative group":   {Trust: Trust{GID: &negative}},
		"mode above 07777": {Mode: 0o10000},
	} {
		if _, err := OpenPath(path, opts); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("OpenPath with %s: %v; want ErrInvalidArgument", what, err)
		}
		if _, err := OpenOrCreatePath(path, opts); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("OpenOrCreatePath with %s: %v; want ErrInvalidArgument", what, err)
		}
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a segment was created with invalid options: %v", err)
	}
}

// A creator sharing a segment with a named group gives the object to the group before it
// sizes it: an attacher with group access that finds the still empty object in another
// group waits for it instead of refusing it. An empty object whose owner or mode is wrong is
// refused at once.
func TestGroupChangeWhileBeingCreated(t *testing.T) {
	requireRoot(t)
	requireShm(t)
	name := trustShmName(t)
	path := shmDir + name
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The creator's uid is not ours and its group is not yet the shared one.
	if err := f.Chown(nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := f.Chmod(0o660); err != nil {
		t.Fatal(err)
	}

	started := time.Now()
	seg, err := Open(name, &Options{Timeout: 5 * time.Second, Mode: 0o600})
	wantUntrusted(t, "Open (mode 0660 wider than asked)", seg, err, UntrustedOwnerOrMode, "mode 0660")
	seg, err = Open(name, &Options{Timeout: 5 * time.Second})
	wantUntrusted(t, "Open (owner 65534, no group access)", seg, err, UntrustedOwnerOrMode, "owned by uid 65534")
	if waited := time.Since(started); waited > 2*time.Second {
		t.Errorf("waited %v to refuse objects that cannot become trusted", waited)
	}

	egid := os.Getegid()
	attached := make(chan error, 1)
	go func() {
		s, err := Open(name, &Options{Timeout: 10 * time.Second, Trust: Trust{GID: &egid}})
		if err == nil {
			s.Close()
		}
		attached <- err
	}()
	time.Sleep(20 * time.Millisecond)
	// The creator finishes: the shared group, then the size, then the format.
	if err := f.Chown(-1, egid); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(HeaderSize); err != nil {
		t.Fatal(err)
	}
	creator, err := mapFd(int(f.Fd()), path, HeaderSize)
	if err != nil {
		t.Fatal(err)
	}
	defer creator.Close()
	if err := creator.format(uint32(os.Getpid()), 0); err != nil {
		t.Fatal(err)
	}
	if err := <-attached; err != nil {
		t.Errorf("attach with group access during creation: %v", err)
	}

	// Past the deadline, an object still in the wrong group is reported as untrusted.
	if err := f.Chown(-1, nobody); err != nil {
		t.Fatal(err)
	}
	other := trustShmName(t)
	g, err := os.OpenFile(shmDir+other, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	g.Chown(nobody, nobody)
	g.Close()
	seg, err = Open(other, &Options{Timeout: 50 * time.Millisecond, Trust: Trust{GID: &egid}})
	wantUntrusted(t, "Open (empty object, group never shared)", seg, err, UntrustedOwnerOrMode, "group 65534,")
}
