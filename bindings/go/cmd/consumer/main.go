// Command consumer receives and verifies the messages producer sends, one goroutine per
// channel:
//
//	consumer <num_channels> <messages_per_channel> [--segment NAME] [--record FILE]
//	         [--idle-exit-ms MS] [--wait SECONDS] [--trust-owner UID[,UID...]] [--mode MODE]
//	         [--large] [--blob]
//
// It waits (up to --wait seconds, default 30) for the segment and each channel to exist, then
// receives on channels 0..num_channels until it has messages_per_channel distinct messages on
// each (count mode). With --idle-exit-ms it instead stops once messages have started to arrive
// and none arrived on any channel for MS milliseconds (several consumers sharing a channel);
// it then gives up if no message at all arrives within --wait seconds. Every payload is
// checked (length, checksum, channel field, filler); duplicates and corrupt messages are
// counted, and in count mode the missing ones. With --record FILE it writes one line
// "channel index" per message received. Exits 1 if anything is corrupt or duplicated, or
// (count mode) missing.
//
// Messages up to the channel's max message size are received (longer than one slot: runs,
// PROTOCOL.md §12). With --large, the producer's --large rule is checked too: message index
// must be pattern.LargeLen(index, LIMIT) bytes long, {24, 960, 961, 65536, LIMIT}[index % 5]
// with LIMIT the channel's max message size (a wrong length counts as corrupt), and the
// channel's limit must be at least 65536.
//
// With --blob, the producer's --blob messages are received in place (PROTOCOL.md §13.5): each
// channel must carry blobs (created with the BLOBS flag in a segment with a blob pool, as the
// producer's --blob makes them; this program waits for them and creates nothing), each
// message is read in its block through a blob view, its length checked to be blobLen(index)
// = {24, 4096, 65537, 1048576, 4194304}[index % 5] for the index in its payload (a wrong
// length counts as corrupt) and its pattern checked, then the block is released; a release
// that reports the block reclaimed while it was read counts as corrupt too. The rest is as
// without --blob.
//
// The segment must be a regular file owned by this user whose mode grants nothing outside
// 0600 (PROTOCOL.md §3.4). --trust-owner also accepts segments owned by those uids and
// --mode MODE (octal) widens the mode accepted: a 0666 segment of uid 65534 takes
// --trust-owner 65534 --mode 0666. A refused segment is reported on one line of stderr
// ("consumer: segment NAME: dmxp: untrusted ...") and the exit status is 1.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"dmxp.dev/dmxp"
	"dmxp.dev/dmxp/internal/cli"
	"dmxp.dev/dmxp/pattern"
)

// largeMin is the smallest channel limit --large works with (its 65536-byte messages).
const largeMin = 65536

const usage = "usage: consumer <num_channels> <messages_per_channel> [--segment NAME] [--record FILE] [--idle-exit-ms MS] [--wait SECONDS] [--trust-owner UID[,UID...]] [--mode MODE] [--large] [--blob]"

// blobLens are the lengths of the --blob messages: message index is blobLens[index % 5].
var blobLens = [5]int{24, 4096, 65537, 1048576, 4194304}

// blobLen is the length of --blob message index.
func blobLen(index uint64) int { return blobLens[index%5] }

type config struct {
	channels, messages uint64
	segment, record    string
	idle, wait         time.Duration
	mode               uint32
	trustOwners        []int
	large              bool
	blob               bool
}

type tally struct {
	channel                     uint32
	unique, duplicated, corrupt uint64
	missing                     uint64
	// first and last are when the first and the last message arrived, as time since start
	// (one monotonic clock read per message, as the Rust consumer's Instant::now); 0: none.
	first, last time.Duration
	err         error
	recorded    []uint64
}

// lastArrival is the time of the latest message on any channel (ns since start), 0 before the
// first one.
var (
	start       = time.Now()
	lastArrival int64
)

func parse(args []string) (*config, error) {
	a, err := cli.ParseSwitches(args, []string{"segment", "record", "idle-exit-ms", "wait", "trust-owner", "mode"}, []string{"large", "blob"})
	if err != nil {
		return nil, err
	}
	if len(a.Positional) > 2 {
		return nil, fmt.Errorf("too many arguments")
	}
	c := &config{}
	if c.channels, err = a.PositionalUint(0, "num_channels", 0, true); err != nil {
		return nil, err
	}
	if c.messages, err = a.PositionalUint(1, "messages_per_channel", 0, true); err != nil {
		return nil, err
	}
	idle, err := a.Uint("idle-exit-ms", 0)
	if err != nil {
		return nil, err
	}
	wait, err := a.Uint("wait", 30)
	if err != nil {
		return nil, err
	}
	c.idle, c.wait = time.Duration(idle)*time.Millisecond, time.Duration(wait)*time.Second
	def := os.Getenv("DMXP_SEGMENT")
	if def == "" {
		def = dmxp.DefaultSegmentName
	}
	c.segment = a.String("segment", def)
	c.record = a.String("record", "")
	c.large = a.Bool("large")
	c.blob = a.Bool("blob")
	if c.blob && c.large {
		return nil, fmt.Errorf("--blob and --large cannot be combined")
	}
	if c.mode, err = a.Mode("mode"); err != nil {
		return nil, err
	}
	if c.trustOwners, err = a.IDs("trust-owner"); err != nil {
		return nil, err
	}
	if c.channels > dmxp.MaxChannels {
		return nil, fmt.Errorf("num_channels %d exceeds %d", c.channels, dmxp.MaxChannels)
	}
	return c, nil
}

// openSegment waits up to cfg.wait for the segment to exist and be formatted.
func openSegment(cfg *config) (*dmxp.Segment, error) {
	deadline := time.Now().Add(cfg.wait)
	for {
		seg, err := dmxp.Open(cfg.segment, &dmxp.Options{
			Mode:    cfg.mode,
			Timeout: time.Until(deadline) + time.Millisecond,
			Trust:   dmxp.Trust{Owners: cfg.trustOwners},
		})
		if err == nil || !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return seg, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// receiver checks the messages of one channel.
type receiver struct {
	cfg   *config
	t     tally
	seen  []bool              // count mode: index < messages
	other map[uint64]struct{} // idle mode: any index
	limit int                 // the channel's max message size (--large lengths)
}

func (r *receiver) check(payload []byte) {
	now := time.Since(start) + 1 // never 0
	if r.cfg.idle > 0 {
		// Only idle mode reads it: count mode spares every message a store to a word that
		// all the channels' goroutines share.
		atomic.StoreInt64(&lastArrival, int64(now))
	}
	if r.t.first == 0 {
		r.t.first = now
	}
	r.t.last = now
	ch, index, err := pattern.Decode(payload)
	if err != nil || ch != uint64(r.t.channel) {
		r.t.corrupt++
		return
	}
	if r.cfg.large && len(payload) != pattern.LargeLen(index, r.limit) {
		r.t.corrupt++
		return
	}
	if r.cfg.blob && len(payload) != blobLen(index) {
		r.t.corrupt++
		return
	}
	if r.cfg.record != "" {
		r.t.recorded = append(r.t.recorded, index)
	}
	duplicate := false
	if r.cfg.idle > 0 {
		_, duplicate = r.other[index]
		r.other[index] = struct{}{}
	} else if index >= r.cfg.messages {
		r.t.corrupt++
		return
	} else {
		duplicate = r.seen[index]
		r.seen[index] = true
	}
	if duplicate {
		r.t.duplicated++
	} else {
		r.t.unique++
	}
}

// idleOver is true in idle mode once messages arrived and none did for cfg.idle.
func idleOver(cfg *config) bool {
	last := atomic.LoadInt64(&lastArrival)
	if last == 0 {
		return time.Since(start) >= cfg.wait
	}
	return time.Since(start)-time.Duration(last-1) >= cfg.idle
}

func receiveAll(seg *dmxp.Segment, cfg *config, id uint32) tally {
	r := &receiver{cfg: cfg, t: tally{channel: id}}
	if cfg.idle > 0 {
		r.other = map[uint64]struct{}{}
	} else {
		r.seen = make([]bool, cfg.messages)
	}
	ch, err := seg.WaitChannel(id, cfg.wait)
	if err != nil {
		r.t.err = fmt.Errorf("channel %d: %w", id, err)
		return r.t
	}
	if cfg.blob {
		return r.receiveBlobs(ch)
	}
	// Crash protection (PROTOCOL.md §11): this goroutine's handle is registered as a consumer.
	if err := ch.Register(dmxp.RoleConsumer); err != nil {
		fmt.Fprintf(os.Stderr, "consumer: channel %d: not registered in the peer table (%v): no crash protection\n", id, err)
	}
	defer ch.Close()
	r.limit = ch.MaxMessageSize()
	if cfg.large && r.limit < largeMin {
		r.t.err = fmt.Errorf("channel %d: --large needs a channel that takes messages of %d bytes; its max message size is %d", id, largeMin, r.limit)
		return r.t
	}
	buf := make([]byte, r.limit)
	deliver := func(_ dmxp.Meta, payload []byte) { r.check(payload) }
	patience := cfg.wait
	if cfg.idle > 0 {
		patience = cfg.idle
	}
	// ErrBusy (heavy contention, or a ring a corrupt peer left in a state that never settles)
	// is retried after a short sleep, but counts as no progress: the idle and wait limits
	// still end the loop, so a wrecked ring cannot keep the consumer forever. progress is when
	// busy last found that messages had arrived since its previous look (moved): the clock is
	// read when the ring is busy, not once per batch.
	progress, moved := time.Now(), false
	busy := func() bool {
		if moved {
			progress, moved = time.Now(), false
		}
		if (cfg.idle > 0 && idleOver(cfg)) || (cfg.idle == 0 && time.Since(progress) >= patience) {
			fmt.Fprintf(os.Stderr, "consumer: channel %d: ring busy (no progress) for %v, giving up\n", id, patience)
			return true
		}
		time.Sleep(time.Millisecond)
		return false
	}
	for cfg.idle > 0 || r.t.unique < cfg.messages {
		got, err := ch.TryReceiveBatch(64, deliver)
		r.t.corrupt += uint64(got.Dropped)
		if got.Delivered > 0 || got.Dropped > 0 {
			moved = true
		}
		if err == nil {
			continue
		}
		if err != dmxp.ErrEmpty {
			if errors.Is(err, dmxp.ErrBusy) {
				if busy() {
					return r.finish()
				}
				continue
			}
			r.t.err = fmt.Errorf("channel %d: %w", id, err)
			break
		}
		meta, err := ch.ReceiveTimeout(buf, patience)
		switch {
		case err == nil:
			moved = true
			r.check(buf[:meta.PayloadLen])
		case errors.Is(err, dmxp.ErrLost) || errors.Is(err, dmxp.ErrCorruptMessage) || errors.Is(err, dmxp.ErrRevoked):
			// A revoked receive (PROTOCOL.md §11.7): a repair freed the position while this
			// consumer held it, and the message is lost to it; counted like a lost one.
			moved = true
			r.t.corrupt++
		case err == dmxp.ErrTimeout && cfg.idle > 0:
			if idleOver(cfg) {
				return r.finish()
			}
		case err == dmxp.ErrTimeout:
			fmt.Fprintf(os.Stderr, "consumer: channel %d: no message for %v, giving up\n", id, cfg.wait)
			return r.finish()
		case errors.Is(err, dmxp.ErrBusy):
			if busy() {
				return r.finish()
			}
		default:
			r.t.err = fmt.Errorf("channel %d: %w", id, err)
			return r.finish()
		}
	}
	return r.finish()
}

// receiveBlobs is receiveAll with --blob: each message is read in place through a blob view
// and released.
func (r *receiver) receiveBlobs(ch *dmxp.Channel) tally {
	cfg, id := r.cfg, ch.ID()
	if !ch.CarriesBlobs() {
		r.t.err = fmt.Errorf("channel %d: --blob needs a channel that carries blobs (created with BLOBS in a segment with a blob pool)", id)
		return r.t
	}
	// In-place receives need a registered consumer: a held block's owner is its peer record.
	if err := ch.Register(dmxp.RoleConsumer); err != nil {
		r.t.err = fmt.Errorf("channel %d: --blob needs a handle registered in the peer table: %w", id, err)
		return r.t
	}
	defer ch.Close()
	patience := cfg.wait
	if cfg.idle > 0 {
		patience = cfg.idle
	}
	busySince := time.Time{}
	for cfg.idle > 0 || r.t.unique < cfg.messages {
		view, err := ch.ReceiveBlobTimeout(patience)
		if err == nil {
			busySince = time.Time{}
			corruptBefore := r.t.corrupt
			r.check(view.Bytes())
			if err := view.Release(); err != nil && r.t.corrupt == corruptBefore {
				// Reclaimed while it was read (PROTOCOL.md §13.6): the bytes checked may have
				// been another message's.
				r.t.corrupt++
			}
			continue
		}
		switch {
		case errors.Is(err, dmxp.ErrLost) || errors.Is(err, dmxp.ErrCorruptMessage) || errors.Is(err, dmxp.ErrRevoked):
			busySince = time.Time{}
			r.t.corrupt++
		case err == dmxp.ErrTimeout && cfg.idle > 0:
			if idleOver(cfg) {
				return r.finish()
			}
		case err == dmxp.ErrTimeout:
			fmt.Fprintf(os.Stderr, "consumer: channel %d: no message for %v, giving up\n", id, cfg.wait)
			return r.finish()
		case errors.Is(err, dmxp.ErrBusy):
			if busySince.IsZero() {
				busySince = time.Now()
			} else if time.Since(busySince) >= patience {
				fmt.Fprintf(os.Stderr, "consumer: channel %d: ring busy (no progress) for %v, giving up\n", id, patience)
				return r.finish()
			}
			time.Sleep(time.Millisecond)
		default:
			r.t.err = fmt.Errorf("channel %d: %w", id, err)
			return r.finish()
		}
	}
	return r.finish()
}

func (r *receiver) finish() tally {
	if r.cfg.idle == 0 {
		r.t.missing = r.cfg.messages - r.t.unique
	}
	return r.t
}

func writeRecord(path string, tallies []tally) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, t := range tallies {
		for _, index := range t.recorded {
			fmt.Fprintf(w, "%d %d\n", t.channel, index)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func main() {
	cfg, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "consumer: %v\n%s\n", err, usage)
		os.Exit(2)
	}
	seg, err := openSegment(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "consumer: segment %s: %v\n", cfg.segment, err)
		os.Exit(1)
	}
	tallies := make([]tally, cfg.channels)
	var wg sync.WaitGroup
	for c := uint64(0); c < cfg.channels; c++ {
		wg.Add(1)
		go func(c uint64) {
			defer wg.Done()
			tallies[c] = receiveAll(seg, cfg, uint32(c))
		}(c)
	}
	wg.Wait()
	ok := true
	var unique, missing, duplicated, corrupt uint64
	var first, last time.Duration // since start, 0: none
	for _, t := range tallies {
		if t.err != nil {
			fmt.Fprintf(os.Stderr, "consumer: %v\n", t.err)
			ok = false
		}
		span := t.last - t.first
		fmt.Printf("consumer: channel %d: received %d (%.0f msgs/s), missing %d, duplicated %d, corrupt %d\n",
			t.channel, t.unique, rate(t.unique, span), t.missing, t.duplicated, t.corrupt)
		unique += t.unique
		missing += t.missing
		duplicated += t.duplicated
		corrupt += t.corrupt
		if t.first != 0 && (first == 0 || t.first < first) {
			first = t.first
		}
		if t.last > last {
			last = t.last
		}
	}
	span := last - first
	fmt.Printf("consumer: received %d messages on %d channels of %s in %v: %.0f msgs/s; missing %d, duplicated %d, corrupt %d\n",
		unique, cfg.channels, cfg.segment, span.Round(time.Microsecond), rate(unique, span), missing, duplicated, corrupt)
	if cfg.record != "" {
		if err := writeRecord(cfg.record, tallies); err != nil {
			fmt.Fprintf(os.Stderr, "consumer: --record %s: %v\n", cfg.record, err)
			ok = false
		}
	}
	if !ok || missing != 0 || duplicated != 0 || corrupt != 0 {
		os.Exit(1)
	}
}

func rate(n uint64, span time.Duration) float64 {
	s := span.Seconds()
	if s < 1e-9 {
		s = 1e-9
	}
	return float64(n) / s
}
