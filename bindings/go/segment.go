package dmxp

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Options tune how a segment is created or attached. The zero value (or a nil *Options)
// means: DefaultSegmentSize, mode 0600, a peer table of PeerRecords (256) records, wait up to
// one second for a segment being created, and the default trust policy (PROTOCOL.md §3.4):
// attach only to a regular file owned by the effective uid whose mode grants nothing outside
// 0600.
type Options struct {
	// Size in bytes of a segment this call creates (at least HeaderSize).
	Size int64
	// Mode is the permission bits (within 0o777) of a segment this call creates, and the most
	// an existing segment may grant for an attach to trust it: an object whose mode has a bit
	// outside Mode is refused with ErrUntrusted. 0 means 0600, or GroupMode (0660) with
	// Trust.GroupAccess or Trust.GID.
	Mode uint32
	// Timeout bounds how long an attach waits while the segment is being created (magic 0 or
	// an object smaller than the header), and how long OpenOrCreate keeps retrying.
	Timeout time.Duration
	// Trust opts in to segments owned by other users or shared with a group.
	Trust Trust
	// PeerRecords is the number of records of the peer table (PROTOCOL.md §11.1) of a segment
	// this call creates, written into the header's peer_records: 0 means PeerRecords (256,
	// a 16 KiB table), otherwise PeerRecords..MaxPeerRecords (16,384, 1 MiB); other values
	// fail with an *InvalidPeerRecordsError (ErrInvalidArgument) before anything is created.
	// Each registered handle (one per channel and role) takes a record, so a segment for many
	// channels with several handles each needs more than 256. The table is carved from the
	// band area (PeerRecords × 64 bytes) by the first registration. An attach always uses
	// what the segment's creator chose, whatever this says. Make a segment with more than
	// 256 records only when every client using it knows peer_records: an older one sees only
	// the first 256 records (PROTOCOL.md §9).
	PeerRecords uint32
	// BlobPool, when not nil, gives a segment this call creates a blob pool of these size
	// classes (PROTOCOL.md §13): 1 to MaxBlobClasses classes of strictly increasing block
	// sizes (multiples of 64, 64..MaxBlockSize) with 1..MaxBlockCount blocks each; others
	// fail with an *InvalidBlobPoolError (ErrInvalidArgument), and a pool that does not fit
	// in Size with an *OutOfSpaceError, before anything is created. The pool is carved from
	// the band area at HeaderSize rounded up to 4096, before magic is stored, and never
	// resized. Channels created with ChannelOptions.Blobs carry references to its blocks. An
	// attach uses the pool the segment's creator made (Segment.BlobPool), whatever this says.
	BlobPool []BlobClass
}

func (o *Options) size() int64 {
	if o == nil || o.Size == 0 {
		return DefaultSegmentSize
	}
	return o.Size
}

func (o *Options) mode() uint32 {
	switch {
	case o == nil:
		return DefaultMode
	case o.Mode != 0:
		return o.Mode
	case o.Trust.group():
		return GroupMode
	}
	return DefaultMode
}

func (o *Options) timeout() time.Duration {
	if o == nil || o.Timeout == 0 {
		return time.Second
	}
	return o.Timeout
}

func (o *Options) peerRecords() uint32 {
	if o == nil {
		return 0
	}
	return o.PeerRecords
}

func (o *Options) blobPool() []BlobClass {
	if o == nil {
		return nil
	}
	return o.BlobPool
}

func (o *Options) gid() *int {
	if o == nil {
		return nil
	}
	return o.Trust.GID
}

// validate checks what needs no system call: the mode bits and the trust settings.
func (o *Options) validate() error {
	if mode := o.mode(); mode&^0o777 != 0 {
		return fmt.Errorf("%w: mode %#o has bits outside 0o777", ErrInvalidArgument, mode)
	}
	if o == nil {
		return nil
	}
	return o.Trust.validate()
}

// Segment is a mapped, validated DMXP segment. Its methods are safe for concurrent use.
// Close unmaps it: no Channel of the segment may be used after Close.
type Segment struct {
	mapping []byte
	base    unsafe.Pointer
	mapped  uint64 // bytes mapped
	length  uint64 // validated segment length (segment_size, or mapped when 0)
	// records is the number of records of the peer table, read once from peer_records when
	// the segment was validated (or chosen when it was formatted): every table operation of
	// this attachment uses it, whatever the field says later.
	records uint32
	// pool is the blob pool's geometry (PROTOCOL.md §13.2), validated once when the segment
	// was attached (or made when it was formatted); nil without a pool.
	pool    *blobPool
	path    string
	created bool
	closed  uint32
}

// ShmPath is where a POSIX shm name lives: /dev/shm + name. A name is "/" followed by 1 to
// MaxShmNameLen (254) bytes, none of them "/", NUL or a control character (below 0x20, or
// 0x7f); others fail with ErrInvalidArgument.
func ShmPath(name string) (string, error) {
	loc, err := shmLocation(name)
	if err != nil {
		return "", err
	}
	return loc.path, nil
}

// Open attaches to the existing POSIX shm segment name, waiting up to opts.Timeout while it is
// being created. A missing segment is reported at once, without waiting, as a
// *SegmentNotFoundError matching ErrNotFound and fs.ErrNotExist; one that fails the trust
// checks (PROTOCOL.md §3.4, see Trust) as an *UntrustedError matching ErrUntrusted, before
// anything is mapped.
func Open(name string, opts *Options) (*Segment, error) {
	loc, err := shmLocation(name)
	if err != nil {
		return nil, err
	}
	return open(loc, opts)
}

// OpenPath attaches to the segment in the file at path (never creating, truncating or
// resizing it), waiting up to opts.Timeout while it is being created. The last component of
// path must not be a symbolic link, and its directory must not be writable by others unless
// it is sticky; the file must pass the trust checks (see Trust). Failures of these match
// ErrUntrusted; a path with a control character fails with ErrInvalidArgument. A missing file
// (or directory) is reported at once as a *SegmentNotFoundError matching ErrNotFound and
// fs.ErrNotExist.
func OpenPath(path string, opts *Options) (*Segment, error) {
	loc, err := fileLocation(path)
	if err != nil {
		return nil, err
	}
	return open(loc, opts)
}

func open(loc *location, opts *Options) (*Segment, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return attach(loc, opts, time.Now().Add(opts.timeout()))
}

// OpenFd attaches to the segment behind an open file descriptor (a shm object, a file or a
// memfd), waiting up to opts.Timeout while it is being created. The descriptor stays the
// caller's: the mapping outlives it. No owner or mode check is made: access by descriptor
// is the caller's decision (a memfd has no owner to check).
func OpenFd(fd int, opts *Options) (*Segment, error) {
	deadline := time.Now().Add(opts.timeout())
	for {
		seg, err := attachFd(fd, "")
		if !errors.Is(err, ErrNotReady) || time.Now().After(deadline) {
			return seg, err
		}
		time.Sleep(time.Millisecond)
	}
}

// Create makes the POSIX shm segment name exclusively and formats it, as CreatePath does for
// /dev/shm + name. An existing object under the name is reported as a *SegmentExistsError
// matching ErrExists and fs.ErrExist.
func Create(name string, opts *Options) (*Segment, error) {
	loc, err := shmLocation(name)
	if err != nil {
		return nil, err
	}
	return create(loc, opts)
}

// CreatePath makes the file at path exclusively (O_CREAT|O_EXCL, which never follows a
// symbolic link: one at path fails like any existing file; mode applied with fchmod, so the
// umask does not narrow it; with Trust.GID given to that group first), sizes it, maps it and
// formats it with magic stored last. Attachers that find it meanwhile wait until magic is
// set. A directory writable by others without the sticky bit is refused (ErrUntrusted). An
// existing file or link at path is reported as a *SegmentExistsError matching ErrExists and
// fs.ErrExist.
func CreatePath(path string, opts *Options) (*Segment, error) {
	loc, err := fileLocation(path)
	if err != nil {
		return nil, err
	}
	return create(loc, opts)
}

func create(loc *location, opts *Options) (*Segment, error) {
	size, mode := opts.size(), opts.mode()
	if size < HeaderSize {
		return nil, &RegionTooSmallError{Len: uint64(size), Needed: HeaderSize}
	}
	records := opts.peerRecords()
	if !validPeerRecords(records) {
		return nil, &InvalidPeerRecordsError{Records: records}
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	pool, err := planBlobPoolFor(opts.blobPool(), uint64(size))
	if err != nil {
		return nil, err
	}
	dirfd, err := loc.openDir()
	if err != nil {
		return nil, err
	}
	defer syscall.Close(dirfd)
	fd, err := syscall.Openat(dirfd, loc.base, syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, mode)
	if err != nil {
		perr := &os.PathError{Op: "create", Path: loc.path, Err: err}
		if err == syscall.EEXIST {
			return nil, &SegmentExistsError{Segment: loc.label, Err: perr}
		}
		return nil, perr
	}
	defer syscall.Close(fd)
	seg, err := finishCreate(fd, loc.path, size, mode, records, pool, opts.gid())
	if err != nil {
		// Nobody can have attached successfully (magic is still 0): remove what we made.
		_ = syscall.Unlinkat(dirfd, loc.base)
		return nil, err
	}
	return seg, nil
}

func finishCreate(fd int, path string, size int64, mode, records uint32, pool *blobPool, gid *int) (*Segment, error) {
	if gid != nil {
		// Before fchmod: a chown by a non-root owner may clear mode bits.
		if err := syscall.Fchown(fd, -1, *gid); err != nil {
			return nil, &os.PathError{Op: fmt.Sprintf("fchown to group %d", *gid), Path: path, Err: err}
		}
	}
	if err := syscall.Fchmod(fd, mode); err != nil {
		return nil, &os.PathError{Op: "fchmod", Path: path, Err: err}
	}
	if err := syscall.Ftruncate(fd, size); err != nil {
		return nil, &os.PathError{Op: "ftruncate", Path: path, Err: err}
	}
	seg, err := mapFd(fd, path, uint64(size))
	if err != nil {
		return nil, err
	}
	if err := seg.formatWith(uint32(os.Getpid()), records, pool); err != nil {
		seg.Close()
		return nil, err
	}
	seg.created = true
	return seg, nil
}

// OpenOrCreate creates the POSIX shm segment name, or attaches to it if it exists (waiting
// while another process formats it). Segment.Created tells which happened. An existing
// segment must pass the trust checks, as for Open.
func OpenOrCreate(name string, opts *Options) (*Segment, error) {
	loc, err := shmLocation(name)
	if err != nil {
		return nil, err
	}
	return openOrCreate(loc, opts)
}

// OpenOrCreatePath is OpenOrCreate for a file path (PROTOCOL.md §3.2, create-or-attach), with
// the checks of CreatePath and OpenPath.
func OpenOrCreatePath(path string, opts *Options) (*Segment, error) {
	loc, err := fileLocation(path)
	if err != nil {
		return nil, err
	}
	return openOrCreate(loc, opts)
}

func openOrCreate(loc *location, opts *Options) (*Segment, error) {
	deadline := time.Now().Add(opts.timeout())
	for {
		seg, err := create(loc, opts)
		if err == nil || !errors.Is(err, os.ErrExist) {
			return seg, err
		}
		seg, err = attach(loc, opts, deadline)
		if err == nil || !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return seg, err
		}
		// Removed between our create and our open: create again.
	}
}

// Unlink removes the POSIX shm segment name. Processes that have it mapped keep it. A missing
// segment is reported as a *SegmentNotFoundError (ErrNotFound, fs.ErrNotExist).
func Unlink(name string) error {
	loc, err := shmLocation(name)
	if err != nil {
		return err
	}
	return loc.missing(os.Remove(loc.path))
}

// attach implements the attach loop of PROTOCOL.md §3.2, checking each object it opens
// (§3.4) before mapping it.
func attach(loc *location, opts *Options, deadline time.Time) (*Segment, error) {
	dirfd, err := loc.openDir()
	if err != nil {
		return nil, loc.missing(err)
	}
	defer syscall.Close(dirfd)
	trust := opts.policy()
	for {
		fd, err := loc.openExisting(dirfd)
		if err != nil {
			return nil, loc.missing(err)
		}
		seg, err := attachTrusted(fd, loc, &trust)
		syscall.Close(fd)
		if !errors.Is(err, ErrNotReady) {
			return seg, err
		}
		if time.Now().After(deadline) {
			var untrusted *UntrustedError
			if errors.As(err, &untrusted) {
				return nil, untrusted
			}
			return nil, fmt.Errorf("%s: %w, or its creator died", loc.path, ErrNotReady)
		}
		time.Sleep(time.Millisecond)
	}
}

// notReadyUntrusted is an *UntrustedError that may still heal (mayBeInFlux): it matches
// ErrNotReady, so the attach loop waits, and reports the refusal if the deadline passes.
type notReadyUntrusted struct{ *UntrustedError }

func (e notReadyUntrusted) Is(target error) bool { return target == ErrNotReady }
func (e notReadyUntrusted) Unwrap() error        { return e.UntrustedError }

// attachTrusted checks the opened object (T1 to T3) with fstat on its descriptor, then maps
// and validates it.
func attachTrusted(fd int, loc *location, trust *policy) (*Segment, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: loc.path, Err: err}
	}
	if e := trust.check(&st, loc); e != nil {
		if e.mayBeInFlux(&st) {
			return nil, notReadyUntrusted{e}
		}
		return nil, e
	}
	return attachFd(fd, loc.path)
}

// attachFd makes one attempt: ErrNotReady when the object is too small or magic is 0.
func attachFd(fd int, path string) (*Segment, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Size < HeaderSize {
		return nil, ErrNotReady
	}
	seg, err := mapFd(fd, path, uint64(st.Size))
	if err != nil {
		return nil, err
	}
	if err := seg.validateHeader(); err != nil {
		seg.Close()
		return nil, err
	}
	return seg, nil
}

func mapFd(fd int, path string, size uint64) (*Segment, error) {
	if size > uint64(^uint(0)>>1) {
		return nil, fmt.Errorf("%w: %d bytes cannot be mapped", ErrInvalidArgument, size)
	}
	data, err := syscall.Mmap(fd, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, &os.PathError{Op: "mmap", Path: path, Err: err}
	}
	base := unsafe.Pointer(&data[0])
	if uintptr(base)%SegmentAlign != 0 {
		_ = syscall.Munmap(data)
		return nil, fmt.Errorf("%w: mapping at %p is not %d-aligned", ErrInvalidArgument, base, SegmentAlign)
	}
	return &Segment{mapping: data, base: base, mapped: size, length: size, records: PeerRecords, path: path}, nil
}

// Close unmaps the segment. Channels opened from it must not be used afterwards.
func (s *Segment) Close() error {
	if !atomic.CompareAndSwapUint32(&s.closed, 0, 1) {
		return ErrClosed
	}
	return syscall.Munmap(s.mapping)
}

// Path is the file the segment was opened from ("" for OpenFd).
func (s *Segment) Path() string { return s.path }

// Created is true when this call created and formatted the segment.
func (s *Segment) Created() bool { return s.created }

// Len is the validated segment length: segment_size, or the mapped size when it is 0.
func (s *Segment) Len() uint64 { return s.length }

// MappedLen is the number of bytes mapped.
func (s *Segment) MappedLen() uint64 { return s.mapped }

// PeerRecords is the number of records of the segment's peer table (PROTOCOL.md §11.1): the
// header's peer_records as validated when this Segment attached (PeerRecords, 256, when it is
// 0), or as this Segment formatted it. Every peer table operation of this Segment and its
// channels uses it; a later change of the header field is ignored.
func (s *Segment) PeerRecords() int { return int(s.records) }

// peerTableLen is the size in bytes of the segment's peer table (PeerRecords × 64).
func (s *Segment) peerTableLen() uint64 { return PeerTableLen(s.records) }

// format writes an empty segment into freshly created memory, magic last (PROTOCOL.md §3.1),
// with a peer table of records records (0: PeerRecords; the caller checked validPeerRecords).
func (s *Segment) format(pid, records uint32) error {
	return s.formatWith(pid, records, nil)
}

// formatWith is format with a blob pool laid out by planBlobPoolFor (nil for none), carved
// and written before magic (PROTOCOL.md §13.1).
func (s *Segment) formatWith(pid, records uint32, pool *blobPool) error {
	if load64(s.base, offMagic) != 0 {
		return ErrAlreadyFormatted
	}
	// First: names who is formatting, so a creator dying here is identifiable (§3.3).
	store32(s.base, offCreatorPid, pid)
	zeroWords(s.base, 8, offCreatorPid-8)
	store32(s.base, offHeaderFlags, 0)
	zeroWords(s.base, offCreatorPid+8, HeaderSize-offCreatorPid-8)
	store32(s.base, offVersion, Version)
	store32(s.base, offMaxChannels, MaxChannels)
	store64(s.base, offSegmentSize, s.mapped)
	store64(s.base, offBandCursor, HeaderSize)
	store32(s.base, offPeerRecords, records)
	if pool != nil {
		if pool.end() > s.mapped {
			return &OutOfSpaceError{Needed: pool.length, Available: s.mapped - pool.offset}
		}
		if err := s.writeBlobPool(pool); err != nil {
			return err
		}
	}
	store64(s.base, offMagic, Magic) // publication point
	s.length = s.mapped
	s.records = peerRecordsOf(records)
	return nil
}

// Header reads the header fields (magic first).
func (s *Segment) Header() HeaderInfo {
	return HeaderInfo{
		Magic:        load64(s.base, offMagic),
		Version:      load32(s.base, offVersion),
		MaxChannels:  load32(s.base, offMaxChannels),
		ChannelCount: load32(s.base, offChannelCount),
		Reserved:     load32(s.base, offReserved),
		SegmentSize:  load64(s.base, offSegmentSize),
		BandCursor:   load64(s.base, offBandCursor),
		CreatorPID:   load32(s.base, offCreatorPid),
		HeaderFlags:  load32(s.base, offHeaderFlags),

		PeerTableOffset: load64(s.base, offPeerTableOffset),
		PeerRecords:     load32(s.base, offPeerRecords),
		BlobPoolOffset:  load64(s.base, offBlobPoolOffset),
	}
}

func (s *Segment) validateHeader() error {
	h := s.Header()
	length, records, err := validateHeader(&h, s.mapped)
	if err != nil {
		return err
	}
	var pool *blobPool
	if h.BlobPoolOffset != 0 {
		// After the header checks of §4.1 (PROTOCOL.md §13.2), read once and cached.
		if pool, err = validateBlobPool(s.base, h.BlobPoolOffset, length); err != nil {
			return err
		}
	}
	s.length, s.records, s.pool = length, records, pool
	return nil
}

func (s *Segment) entry(id uint32) unsafe.Pointer {
	return unsafe.Add(s.base, EntryOffset(id))
}

// Entry reads channel entry id (state, then capacity, then the rest), or fails for id >= 256.
func (s *Segment) Entry(id uint32) (EntryInfo, error) {
	if id >= MaxChannels {
		return EntryInfo{}, &InvalidChannelIDError{ID: id}
	}
	e := s.entry(id)
	// state first: READY seen means the capacity stored before it is visible too.
	state := load32(e, entState)
	capacity := load64(e, entCapacity)
	return EntryInfo{
		ChannelID:       load32(e, entChannelID),
		Flags:           load32(e, entFlags),
		Capacity:        capacity,
		BandOffset:      load64(e, entBandOffset),
		State:           state,
		CreatorPID:      load32(e, entCreatorPid),
		NotEmptySeq:     load32(e, entNotEmptySeq),
		NotEmptyWaiters: load32(e, entNotEmptyWaiters),
		NotFullSeq:      load32(e, entNotFullSeq),
		NotFullWaiters:  load32(e, entNotFullWaiters),
		Tail:            load64(e, entTail),
		Head:            load64(e, entHead),
		MaxMessageSize:  load32(e, entMaxMessageSize),
	}, nil
}

// geometry validates entry id; ok is false when the channel has not been created.
func (s *Segment) geometry(id uint32) (Geometry, bool, error) {
	e, err := s.Entry(id)
	if err != nil {
		return Geometry{}, false, err
	}
	return validateEntry(id, &e, s.length)
}

func (s *Segment) checkNoOverlap(g Geometry) error {
	for other := uint32(0); other < MaxChannels; other++ {
		if other == g.ID {
			continue
		}
		// A corrupt neighbour is reported when it is opened, not here.
		theirs, ok, err := s.geometry(other)
		if err != nil || !ok {
			continue
		}
		if g.BandOffset < theirs.BandEnd() && theirs.BandOffset < g.BandEnd() {
			e := corruptEntry(BandsOverlap, g.ID, g.BandOffset)
			e.Other = int(other)
			return e
		}
	}
	// The peer table is carved like a band: it shares no byte with one either (§11.1).
	return s.checkPeerTable(load64(s.base, offPeerTableOffset), []Geometry{g})
}

// Channels lists every created channel whose entry and band validate (PROTOCOL.md §4.2
// checks #1..#8), in id order. Its flags and max_message_size (checks #10, #11) are not
// checked here: OpenChannel and ValidateAll check them.
func (s *Segment) Channels() []Geometry {
	var list []Geometry
	for id := uint32(0); id < MaxChannels; id++ {
		if g, ok, err := s.geometry(id); err == nil && ok {
			list = append(list, g)
		}
	}
	return list
}

// ValidateAll validates every entry and checks that no two bands overlap.
func (s *Segment) ValidateAll() error {
	var bands []Geometry
	for id := uint32(0); id < MaxChannels; id++ {
		g, ok, err := s.geometry(id)
		if err != nil {
			return err
		}
		if ok {
			bands = append(bands, g)
		}
	}
	if err := checkOverlaps(bands); err != nil {
		return err
	}
	if err := s.checkPeerTable(load64(s.base, offPeerTableOffset), bands); err != nil {
		return err
	}
	sort.Slice(bands, func(i, j int) bool { return bands[i].ID < bands[j].ID })
	for _, g := range bands {
		if err := validateRuns(g); err != nil {
			return err
		}
		if err := s.checkBlobs(g); err != nil {
			return err
		}
	}
	return nil
}

// checkPeerTable validates a peer_table_offset read from the header (PROTOCOL.md §11.1) for a
// table of this attachment's PeerRecords records: in range (0, no table, is), and overlapping
// none of bands.
func (s *Segment) checkPeerTable(table uint64, bands []Geometry) error {
	size := s.peerTableLen()
	if !peerTableInRange(table, size, s.length) {
		return peerTableOutOfRange(table, size, s.length)
	}
	if g, bad := peerTableOverlap(table, size, bands); bad {
		return corruptEntry(PeerTableOverlapsBand, g.ID, table)
	}
	if table != 0 && s.pool.overlaps(table, size) {
		e := corruptHeader(BlobPoolOverlap, table)
		e.Field = "peer_table_offset"
		return e
	}
	return nil
}

// OpenChannel opens the created channel id after validating its entry and band
// (PROTOCOL.md §4.2), then its flags and max_message_size (§12.1: a *CorruptionError of kind
// UnknownChannelFlags or MaxMessageSizeOutOfRange; with ChannelFlagBlobs in a segment without
// a blob pool, BlobsWithoutPool, §13.1; a band overlapping the pool, BlobPoolOverlap). The
// flags and the message limit are cached with the geometry (Channel.MaxMessageSize). It fails
// with a *NotFoundError or *BeingCreatedError when the channel does not exist yet.
func (s *Segment) OpenChannel(id uint32) (*Channel, error) {
	g, ok, err := s.geometry(id)
	if err != nil {
		return nil, err
	}
	if !ok {
		if load32(s.entry(id), entState) == StateCreating {
			return nil, &BeingCreatedError{Channel: id}
		}
		return nil, &NotFoundError{Channel: id}
	}
	if err := s.checkNoOverlap(g); err != nil {
		return nil, err
	}
	if err := validateRuns(g); err != nil {
		return nil, err
	}
	if err := s.checkBlobs(g); err != nil {
		return nil, err
	}
	return newChannel(s, g), nil
}

// WaitChannel opens channel id, waiting up to timeout for it to be created.
func (s *Segment) WaitChannel(id uint32, timeout time.Duration) (*Channel, error) {
	deadline := time.Now().Add(timeout)
	for {
		ch, err := s.OpenChannel(id)
		if err == nil || !(errors.Is(err, ErrNotFound) || errors.Is(err, ErrBeingCreated)) || time.Now().After(deadline) {
			return ch, err
		}
		time.Sleep(time.Millisecond)
	}
}

// ChannelOptions are the settings of a channel a call creates (CreateChannelWith,
// TryOpenOrCreateChannelWith, OpenOrCreateChannelWith). The zero value makes a channel of
// single-slot messages (at most MsgInline, 960 bytes), as CreateChannel does.
type ChannelOptions struct {
	// MaxMessageSize is the largest message the channel takes, in bytes. Up to MsgInline
	// (0 included) makes a channel without runs. Above it, the channel is created with
	// ChannelFlagRuns and this limit (PROTOCOL.md §12.1): messages longer than one slot travel
	// as runs of ceil(len / 960) consecutive slots. It must not exceed capacity × MsgInline
	// (else an *InvalidMaxMessageSizeError, before anything is created); since a run needs
	// that many free slots at once, a limit near it makes a large send wait for an almost
	// empty ring (the dmxp CLI keeps to capacity / 2 × 960 unless asked for more). An
	// existing channel is opened with its own settings, whatever this says.
	MaxMessageSize uint32
	// Blobs creates the channel with ChannelFlagBlobs: it may carry references to blocks of
	// the segment's blob pool (PROTOCOL.md §13), loaned with Channel.LoanBlob and received
	// with Channel.ReceiveBlob, besides inline messages. The segment must have a pool
	// (Options.BlobPool), else the creation fails with ErrNoBlobPool before anything is
	// claimed. It combines with MaxMessageSize.
	Blobs bool
}

// entryFlags are the entry's flags and max_message_size for these options (checked).
func (o ChannelOptions) entryFlags(capacity uint64) (flags, maxMessageSize uint32, err error) {
	if o.Blobs {
		flags = ChannelFlagBlobs
	}
	if o.MaxMessageSize <= MsgInline {
		return flags, 0, nil
	}
	if uint64(o.MaxMessageSize) > capacity*MsgInline {
		return 0, 0, &InvalidMaxMessageSizeError{MaxMessageSize: o.MaxMessageSize, Capacity: capacity}
	}
	return flags | ChannelFlagRuns, o.MaxMessageSize, nil
}

// TryOpenOrCreateChannel creates channel id with capacity slots, or opens it if it exists
// (whatever its capacity); created tells which. A *BeingCreatedError means another process
// holds the creation claim right now: retry shortly (OpenOrCreateChannel does).
func (s *Segment) TryOpenOrCreateChannel(id uint32, capacity uint64) (ch *Channel, created bool, err error) {
	return s.TryOpenOrCreateChannelWith(id, capacity, ChannelOptions{})
}

// TryOpenOrCreateChannelWith is TryOpenOrCreateChannel creating the channel with opts (a
// message limit above one slot: ChannelOptions.MaxMessageSize). An existing channel is
// opened as it is.
func (s *Segment) TryOpenOrCreateChannelWith(id uint32, capacity uint64, opts ChannelOptions) (ch *Channel, created bool, err error) {
	if !validCapacity(capacity) {
		return nil, false, &InvalidCapacityError{Capacity: capacity}
	}
	flags, maxMessageSize, err := opts.entryFlags(capacity)
	if err != nil {
		return nil, false, err
	}
	if flags&ChannelFlagBlobs != 0 && s.pool == nil {
		return nil, false, fmt.Errorf("%w: channel %d asks for BLOBS in a segment without a blob pool", ErrNoBlobPool, id)
	}
	if id >= MaxChannels {
		return nil, false, &InvalidChannelIDError{ID: id}
	}
	e := s.entry(id)
	if load64(e, entCapacity) != 0 {
		ch, err := s.OpenChannel(id)
		return ch, false, err
	}
	if !cas32(e, entState, StateEmpty, StateCreating) {
		ch, err := s.OpenChannel(id)
		if errors.Is(err, ErrNotFound) {
			return nil, false, &BeingCreatedError{Channel: id}
		}
		return ch, false, err
	}
	pid := uint32(os.Getpid())
	store32(e, entCreatorPid, pid) // names a creator that dies holding the claim
	ch, err = s.initialiseChannel(id, e, capacity, pid, flags, maxMessageSize)
	if err != nil {
		store32(e, entState, StateEmpty) // give the id back
		return nil, false, err
	}
	return ch, true, nil
}

// OpenOrCreateChannel is TryOpenOrCreateChannel retried while another process is creating
// the channel, up to timeout.
func (s *Segment) OpenOrCreateChannel(id uint32, capacity uint64, timeout time.Duration) (*Channel, bool, error) {
	return s.OpenOrCreateChannelWith(id, capacity, ChannelOptions{}, timeout)
}

// OpenOrCreateChannelWith is TryOpenOrCreateChannelWith retried while another process is
// creating the channel, up to timeout.
func (s *Segment) OpenOrCreateChannelWith(id uint32, capacity uint64, opts ChannelOptions, timeout time.Duration) (*Channel, bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		ch, created, err := s.TryOpenOrCreateChannelWith(id, capacity, opts)
		if !errors.Is(err, ErrBeingCreated) || time.Now().After(deadline) {
			return ch, created, err
		}
		time.Sleep(time.Millisecond)
	}
}

// CreateChannel creates channel id, failing with an *ExistsError if it already exists.
func (s *Segment) CreateChannel(id uint32, capacity uint64) (*Channel, error) {
	return s.CreateChannelWith(id, capacity, ChannelOptions{})
}

// CreateChannelWith is CreateChannel with opts: ChannelOptions.MaxMessageSize above
// MsgInline makes a channel that carries messages up to that size (PROTOCOL.md §12).
func (s *Segment) CreateChannelWith(id uint32, capacity uint64, opts ChannelOptions) (*Channel, error) {
	ch, created, err := s.TryOpenOrCreateChannelWith(id, capacity, opts)
	if err != nil {
		return nil, err
	}
	if !created {
		return nil, &ExistsError{Channel: id, Capacity: ch.Capacity()}
	}
	return ch, nil
}

// initialiseChannel runs with the entry's CREATING claim held (PROTOCOL.md §5).
func (s *Segment) initialiseChannel(id uint32, e unsafe.Pointer, capacity uint64, pid, flags, maxMessageSize uint32) (*Channel, error) {
	start, err := s.reserveBand(capacity)
	if err != nil {
		return nil, err
	}
	g := Geometry{ID: id, Capacity: capacity, BandOffset: start, Flags: flags, MaxMessageSize: maxMessageSize}
	band := unsafe.Add(s.base, start)
	for k := uint64(0); k < capacity; k++ {
		slot := unsafe.Add(band, k*SlotSize)
		zeroWords(slot, 8, SlotSize-8)
		store64(slot, slotSequence, k)
	}
	store32(e, entChannelID, id)
	store32(e, entFlags, flags)
	store32(e, entMaxMessageSize, maxMessageSize)
	store64(e, entBandOffset, start)
	store32(e, entCreatorPid, pid)
	store32(e, entNotEmptySeq, 0)
	store32(e, entNotEmptyWaiters, 0)
	store32(e, entNotFullSeq, 0)
	store32(e, entNotFullWaiters, 0)
	store64(e, entHead, 0)
	store64(e, entTail, 0)
	atomic.AddUint32(ptr32(s.base, offChannelCount), 1)
	store64(e, entCapacity, capacity) // publication point
	store32(e, entState, StateReady)
	return newChannel(s, g), nil
}

// reserveBand carves capacity slots from the header's bump cursor by CAS.
func (s *Segment) reserveBand(capacity uint64) (uint64, error) {
	return s.reserveBytes(BandLen(capacity))
}

// reserveBytes carves need bytes from the band cursor by CAS (PROTOCOL.md §5 reserve_band).
func (s *Segment) reserveBytes(need uint64) (uint64, error) {
	start := load64(s.base, offBandCursor)
	for i := 0; i < retryLimit; i++ {
		if start == 0 {
			// A segment made by a client without the cursor: adopt the end of the last band.
			adopted := s.endOfBands()
			if cas64(s.base, offBandCursor, 0, adopted) {
				start = adopted
			} else {
				start = load64(s.base, offBandCursor)
				continue
			}
		}
		if start < HeaderSize || start > s.length || start%SlotAlign != 0 {
			e := corruptHeader(BandCursorOutOfRange, start)
			e.Limit = s.length
			return 0, e
		}
		end := start + need
		if end < start || end > s.length {
			return 0, &OutOfSpaceError{Needed: need, Available: s.length - start}
		}
		if s.pool.overlaps(start, need) {
			// A scribbled cursor: never carve a band over the blob pool's blocks.
			e := corruptHeader(BandCursorOutOfRange, start)
			e.Limit = s.length
			return 0, e
		}
		if cas64(s.base, offBandCursor, start, end) {
			return start, nil
		}
		start = load64(s.base, offBandCursor)
	}
	return 0, ErrBusy
}

func (s *Segment) endOfBands() uint64 {
	end := uint64(HeaderSize)
	if s.pool != nil {
		end = s.pool.end()
	}
	for _, g := range s.Channels() {
		if g.BandEnd() > end {
			end = g.BandEnd()
		}
	}
	return end
}
