package dmxp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Attach trust (PROTOCOL.md §3.4): whether the object found under a segment's name is one
// this process should share at all. Another user can plant /dev/shm/dmxp_alloc, or a file or
// a symbolic link at a file segment's path, before the real creator runs.

// GroupMode is the mode of a segment shared with a group (Trust.GroupAccess): owner and
// group may read and write.
const GroupMode = 0o660

// MaxShmNameLen is the longest POSIX shm name accepted after its leading "/", in bytes.
const MaxShmNameLen = 254

// ErrUntrusted matches every *UntrustedError: the object found under a segment's name is not
// one this process trusts (PROTOCOL.md §3.4). Nothing was mapped or written.
var ErrUntrusted = errors.New("dmxp: untrusted segment")

// Trust widens which existing segments an attach accepts (PROTOCOL.md §3.4). The zero value
// is the default policy: the object must be a regular file owned by os.Geteuid() whose mode
// grants nothing outside Options.Mode (0600 when Mode is 0). Every opt-in is explicit and
// applies to the call it is passed to.
//
// Whatever the policy, Open, OpenPath and OpenOrCreate* refuse (with ErrUntrusted) anything
// but a regular file, a symbolic link at the segment's path (it is never followed) and, for
// file segments, a parent directory that others may write to without the sticky bit.
type Trust struct {
	// Owners are uids whose segments are trusted besides the effective uid's. Trusting an
	// owner does not widen the mode: to attach to, say, a 0666 object owned by 65534, set
	// Owners to []int{65534} and Options.Mode to 0o666.
	Owners []int
	// GroupAccess shares segments with a group. A segment this call creates gets GroupMode
	// (0660) unless Options.Mode says otherwise; an existing one is also trusted when its
	// group is GID, or, with GID nil, the effective gid or one of the supplementary groups
	// (its mode must still be within Options.Mode, 0660 by default).
	GroupAccess bool
	// GID names the group of GroupAccess and implies it. A segment this call creates is given
	// to that group (fchown, before it is sized and formatted); the process must belong to
	// the group or hold CAP_CHOWN.
	GID *int
}

func (t *Trust) group() bool { return t.GroupAccess || t.GID != nil }

func (t *Trust) validate() error {
	for _, uid := range t.Owners {
		if uid < 0 {
			return fmt.Errorf("%w: trusted owner uid %d is negative", ErrInvalidArgument, uid)
		}
	}
	if t.GID != nil && *t.GID < 0 {
		return fmt.Errorf("%w: group id %d is negative", ErrInvalidArgument, *t.GID)
	}
	return nil
}

// UntrustedReason says which check of PROTOCOL.md §3.4 an object failed.
type UntrustedReason int

// The reasons an *UntrustedError gives.
const (
	// UntrustedOwnerOrMode: its owner is not trusted (T2) or its mode grants more than was
	// asked for (T3).
	UntrustedOwnerOrMode UntrustedReason = iota + 1
	// UntrustedNotRegular: not a regular file (T1).
	UntrustedNotRegular
	// UntrustedSymlink: a symbolic link at the segment's path (never followed).
	UntrustedSymlink
	// UntrustedDirectory: the file segment's directory is writable by others and not sticky.
	UntrustedDirectory
)

// UntrustedError reports an object refused by the attach-trust checks. It matches
// ErrUntrusted.
type UntrustedError struct {
	Reason UntrustedReason
	// Segment names what was opened: "shm segment /name" or "file segment path".
	Segment string
	// Path is the object checked: the segment's file, or its directory for
	// UntrustedDirectory.
	Path string
	// Owner and Group are the object's uid and gid (-1 for UntrustedSymlink: not followed).
	Owner, Group int
	// Mode is the object's permission bits (st_mode & 07777); FileType its st_mode & S_IFMT.
	Mode, FileType uint32
	// Owners are the uids that were trusted (the effective uid first).
	Owners []int
	// Groups are the groups that were trusted (nil without group access).
	Groups []int
	// Asked is the mode the caller asked for: the most an object may grant.
	Asked uint32
}

// Is matches ErrUntrusted.
func (e *UntrustedError) Is(target error) bool { return target == ErrUntrusted }

// Error implements the error interface.
func (e *UntrustedError) Error() string {
	prefix := "dmxp: untrusted " + e.Segment + ": "
	switch e.Reason {
	case UntrustedSymlink:
		return prefix + "is a symbolic link (not followed)"
	case UntrustedNotRegular:
		return prefix + fmt.Sprintf("not a regular file (%s, owned by uid %d with mode %04o)",
			fileTypeName(e.FileType), e.Owner, e.Mode)
	case UntrustedDirectory:
		return prefix + fmt.Sprintf("its directory %s is writable by others without the sticky bit "+
			"(owned by uid %d with mode %04o); expected a directory others cannot write to, or a sticky one like /tmp",
			e.Path, e.Owner, e.Mode)
	}
	msg := prefix + fmt.Sprintf("owned by uid %d", e.Owner)
	if e.Groups != nil {
		msg += fmt.Sprintf(", group %d,", e.Group)
	}
	msg += fmt.Sprintf(" with mode %04o; expected owner uid %s", e.Mode, joinIDs(e.Owners))
	if e.Groups != nil {
		msg += " or group " + joinIDs(e.Groups)
	}
	msg += fmt.Sprintf(" and a mode within %04o", e.Asked)
	var hints []string
	if !e.ownerTrusted() {
		hints = append(hints, fmt.Sprintf("Trust.Owners [%d]", e.Owner))
	}
	if e.Mode&^e.Asked != 0 {
		hints = append(hints, fmt.Sprintf("Mode %#o", e.Mode|e.Asked))
	}
	if len(hints) > 0 {
		msg += " (trust it explicitly with " + strings.Join(hints, " and ") + ")"
	}
	return msg
}

func (e *UntrustedError) ownerTrusted() bool {
	return containsID(e.Owners, e.Owner) || containsID(e.Groups, e.Group)
}

func joinIDs(ids []int) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.Itoa(id)
	}
	return strings.Join(parts, " or ")
}

func containsID(ids []int, id int) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func fileTypeName(t uint32) string {
	switch t {
	case syscall.S_IFDIR:
		return "a directory"
	case syscall.S_IFIFO:
		return "a FIFO"
	case syscall.S_IFCHR:
		return "a character device"
	case syscall.S_IFBLK:
		return "a block device"
	case syscall.S_IFSOCK:
		return "a socket"
	case syscall.S_IFLNK:
		return "a symbolic link"
	}
	return fmt.Sprintf("file type %#o", t)
}

// policy is a Trust resolved against this process's credentials.
type policy struct {
	owners []int  // trusted uids, the effective uid first
	groups []int  // trusted gids; nil without group access
	asked  uint32 // the most an object's mode may grant
}

func (o *Options) policy() policy {
	p := policy{owners: []int{os.Geteuid()}, asked: o.mode()}
	if o == nil {
		return p
	}
	for _, uid := range o.Trust.Owners {
		if !containsID(p.owners, uid) {
			p.owners = append(p.owners, uid)
		}
	}
	switch {
	case o.Trust.GID != nil:
		p.groups = []int{*o.Trust.GID}
	case o.Trust.GroupAccess:
		p.groups = []int{os.Getegid()}
		if more, err := os.Getgroups(); err == nil {
			for _, gid := range more {
				if !containsID(p.groups, gid) {
					p.groups = append(p.groups, gid)
				}
			}
		}
	}
	return p
}

// check applies T1 to T3 to the fstat of an opened object; nil when it is trusted.
func (p *policy) check(st *syscall.Stat_t, loc *location) *UntrustedError {
	e := &UntrustedError{
		Segment:  loc.label,
		Path:     loc.path,
		Owner:    int(st.Uid),
		Group:    int(st.Gid),
		Mode:     st.Mode & 0o7777,
		FileType: st.Mode & syscall.S_IFMT,
		Owners:   p.owners,
		Groups:   p.groups,
		Asked:    p.asked,
	}
	if e.FileType != syscall.S_IFREG {
		e.Reason = UntrustedNotRegular
		return e
	}
	if !e.ownerTrusted() || e.Mode&^p.asked != 0 {
		e.Reason = UntrustedOwnerOrMode
		return e
	}
	return nil
}

// mayBeInFlux is true when a refused object could still become trusted: its creator sizes
// it last, after giving it to a named group, so an object smaller than the header whose only
// fault is its group may be in that window. A wrong owner uid or too wide a mode never heals.
func (e *UntrustedError) mayBeInFlux(st *syscall.Stat_t) bool {
	return e.Reason == UntrustedOwnerOrMode && st.Size < HeaderSize && e.Groups != nil &&
		!containsID(e.Owners, e.Owner) && e.Mode&^e.Asked == 0
}

// location is where a named segment lives: a POSIX shm object or a file.
type location struct {
	path  string // the object's path
	dir   string // its directory, opened once per call
	base  string // its name in dir
	label string // "shm segment /name" or "file segment path", for errors
	file  bool   // a file segment: its directory is checked too
}

// checkShmName applies the name rule of PROTOCOL.md §3.4: "/" then 1 to 254 bytes, none of
// them "/", NUL or a control character.
func checkShmName(name string) error {
	rest := strings.TrimPrefix(name, "/")
	if len(rest) == len(name) || rest == "" || len(rest) > MaxShmNameLen {
		return fmt.Errorf("%w: shm name %q must be \"/\" followed by 1 to %d bytes", ErrInvalidArgument, name, MaxShmNameLen)
	}
	for i := 0; i < len(rest); i++ {
		if b := rest[i]; b == '/' || b < 0x20 || b == 0x7f {
			return fmt.Errorf("%w: shm name %q contains %q: only \"/\" at the start, and no control characters",
				ErrInvalidArgument, name, b)
		}
	}
	return nil
}

// checkFilePath refuses an empty path and any control character (NUL included).
func checkFilePath(path string) error {
	if path == "" {
		return fmt.Errorf("%w: empty segment path", ErrInvalidArgument)
	}
	for i := 0; i < len(path); i++ {
		if b := path[i]; b < 0x20 || b == 0x7f {
			return fmt.Errorf("%w: segment path %q contains the control character %q", ErrInvalidArgument, path, b)
		}
	}
	return nil
}

func shmLocation(name string) (*location, error) {
	if err := checkShmName(name); err != nil {
		return nil, err
	}
	return &location{path: shmDir + name, dir: shmDir, base: name[1:], label: "shm segment " + name}, nil
}

func fileLocation(path string) (*location, error) {
	if err := checkFilePath(path); err != nil {
		return nil, err
	}
	dir, base := filepath.Split(path)
	if base == "" || base == "." || base == ".." {
		return nil, fmt.Errorf("%w: segment path %q does not end in a file name", ErrInvalidArgument, path)
	}
	// dir is opened as written (the kernel resolves it as it would the whole path); only a
	// trailing "/" is dropped, for messages.
	if trimmed := strings.TrimRight(dir, "/"); trimmed != "" {
		dir = trimmed
	} else if dir == "" {
		dir = "."
	}
	return &location{path: path, dir: dir, base: base, label: "file segment " + path, file: true}, nil
}

const shmDir = "/dev/shm"

// openDir opens the location's directory; for a file segment it refuses one that others
// may write to without the sticky bit (checked with fstat on this descriptor, the one the
// segment is then opened relative to).
func (l *location) openDir() (int, error) {
	fd, err := syscall.Open(l.dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open directory", Path: l.dir, Err: err}
	}
	if !l.file {
		return fd, nil
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return -1, &os.PathError{Op: "fstat", Path: l.dir, Err: err}
	}
	if st.Mode&syscall.S_IWOTH != 0 && st.Mode&syscall.S_ISVTX == 0 {
		syscall.Close(fd)
		return -1, &UntrustedError{
			Reason:   UntrustedDirectory,
			Segment:  l.label,
			Path:     l.dir,
			Owner:    int(st.Uid),
			Group:    int(st.Gid),
			Mode:     st.Mode & 0o7777,
			FileType: st.Mode & syscall.S_IFMT,
		}
	}
	return fd, nil
}

// missing reports err, from opening the location's directory or segment (or removing it), as
// a *SegmentNotFoundError when that does not exist; other errors are returned as they are.
func (l *location) missing(err error) error {
	if err != nil && errors.Is(err, os.ErrNotExist) {
		return &SegmentNotFoundError{Segment: l.label, Err: err}
	}
	return err
}

// openExisting opens the segment read-write without following a symbolic link. O_NONBLOCK
// and O_NOCTTY keep a FIFO or device planted there from blocking or becoming the controlling
// terminal before T1 refuses it; they change nothing for a regular file.
func (l *location) openExisting(dirfd int) (int, error) {
	fd, err := syscall.Openat(dirfd, l.base,
		syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err == syscall.ELOOP {
		return -1, &UntrustedError{Reason: UntrustedSymlink, Segment: l.label, Path: l.path, Owner: -1, Group: -1}
	}
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: l.path, Err: err}
	}
	return fd, nil
}
