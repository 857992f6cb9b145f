// Command producer sends verifiable messages on DMXP channels 0..num_channels, one goroutine
// per channel:
//
//	producer <num_channels> <messages_per_channel> [capacity] [--segment NAME]
//	         [--first-index K] [--batch N] [--size BYTES] [--full-wait SECONDS]
//	         [--trust-owner UID[,UID...]] [--mode MODE] [--large]
//	         [--max-message-size BYTES] [--blob]
//
// It opens or creates the segment (default /dmxp_alloc, or $DMXP_SEGMENT) and each channel
// (an existing channel is used as is), then sends indices K..K+messages_per_channel-1 on each
// channel with the payload pattern.Encode(c, index, pattern.DefaultLen(index)). A full ring
// makes the sender sleep on the channel's futex until a consumer frees a slot, for at most
// --full-wait seconds (default 60).
//
// --max-message-size BYTES creates the channels with that message limit (PROTOCOL.md §12:
// above 960 bytes, messages travel as runs of slots; at most capacity × 960). --large sends
// messages longer than one slot: message index has the length pattern.LargeLen(index, LIMIT),
// {24, 960, 961, 65536, LIMIT}[index % 5], where LIMIT is the channel's max message size
// (--max-message-size defaults to 262144 with --large); it must be at least 65536. With
// --batch, the messages longer than 960 bytes are sent one by one between the batches.
//
// --blob sends every message as a blob (PROTOCOL.md §13): the segment is created, if missing,
// with a blob pool of three classes (65536 bytes × 32 blocks, 1048576 × 8, 4194304 × 6), and
// the channels, if missing, with the BLOBS flag. Message index is a blob of blobLen(index) =
// {24, 4096, 65537, 1048576, 4194304}[index % 5] bytes of pattern.EncodeLarge(c, index, len),
// written in place into a loaned block and committed. When the pool is exhausted the sender
// waits (at most 30 s) for a consumer to release a block. --blob takes neither --batch nor
// --large.
//
// An existing segment must be a regular file owned by this user whose mode grants nothing
// outside 0600 (PROTOCOL.md §3.4). --trust-owner also accepts segments owned by those uids,
// and --mode MODE (octal) both sets the mode of a segment this program creates and widens the
// mode an existing one may have: attaching to a 0666 segment of uid 65534 takes
// --trust-owner 65534 --mode 0666. A refused segment is reported on one line of stderr
// ("producer: segment NAME: dmxp: untrusted ...") and the exit status is 1.
package main

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"dmxp.dev/dmxp"
	"dmxp.dev/dmxp/internal/cli"
	"dmxp.dev/dmxp/pattern"
)

// largeMin is the smallest channel limit --large works with (its 65536-byte messages).
const largeMin = 65536

const usage = "usage: producer <num_channels> <messages_per_channel> [capacity] [--segment NAME] [--first-index K] [--batch N] [--size BYTES] [--full-wait SECONDS] [--trust-owner UID[,UID...]] [--mode MODE] [--large] [--max-message-size BYTES] [--blob]"

// blobClasses is the pool the interop programs create with --blob.
var blobClasses = []dmxp.BlobClass{{BlockSize: 65536, BlockCount: 32}, {BlockSize: 1048576, BlockCount: 8}, {BlockSize: 4194304, BlockCount: 6}}

// blobLens are the lengths of the --blob messages: message index is blobLens[index % 5].
var blobLens = [5]int{24, 4096, 65537, 1048576, 4194304}

// blobLen is the length of --blob message index.
func blobLen(index uint64) int { return blobLens[index%5] }

// blobLoanWait is how long a --blob sender waits for a free block.
const blobLoanWait = 30 * time.Second

// defaultLargeLimit is the channels' message limit with --large and no --max-message-size.
const defaultLargeLimit = 262144

type config struct {
	channels, messages, capacity, first, batch uint64
	segment                                    string
	size                                       uint64
	fullWait                                   time.Duration
	mode                                       uint32
	trustOwners                                []int
	large                                      bool
	maxMessageSize                             uint32
	blob                                       bool
}

type result struct {
	channel uint32
	sent    uint64
	full    uint64
	elapsed time.Duration
	err     error
}

func parse(args []string) (*config, error) {
	a, err := cli.ParseSwitches(args, []string{"segment", "first-index", "batch", "size", "full-wait", "trust-owner", "mode", "max-message-size"}, []string{"large", "blob"})
	if err != nil {
		return nil, err
	}
	if len(a.Positional) > 3 {
		return nil, fmt.Errorf("too many arguments")
	}
	c := &config{}
	if c.channels, err = a.PositionalUint(0, "num_channels", 0, true); err != nil {
		return nil, err
	}
	if c.messages, err = a.PositionalUint(1, "messages_per_channel", 0, true); err != nil {
		return nil, err
	}
	if c.capacity, err = a.PositionalUint(2, "capacity", dmxp.DefaultCapacity, false); err != nil {
		return nil, err
	}
	if c.first, err = a.Uint("first-index", 0); err != nil {
		return nil, err
	}
	if c.batch, err = a.Uint("batch", 0); err != nil {
		return nil, err
	}
	if c.size, err = a.Uint("size", dmxp.DefaultSegmentSize); err != nil {
		return nil, err
	}
	fullWait, err := a.Uint("full-wait", 60)
	if err != nil {
		return nil, err
	}
	c.fullWait = time.Duration(fullWait) * time.Second
	if c.mode, err = a.Mode("mode"); err != nil {
		return nil, err
	}
	if c.trustOwners, err = a.IDs("trust-owner"); err != nil {
		return nil, err
	}
	def := os.Getenv("DMXP_SEGMENT")
	if def == "" {
		def = dmxp.DefaultSegmentName
	}
	c.segment = a.String("segment", def)
	c.large = a.Bool("large")
	limit := uint64(0)
	if c.large {
		limit = defaultLargeLimit
	}
	if limit, err = a.Uint("max-message-size", limit); err != nil {
		return nil, err
	}
	if limit > 1<<32-1 {
		return nil, fmt.Errorf("--max-message-size %d exceeds %d", limit, uint32(1<<32-1))
	}
	c.maxMessageSize = uint32(limit)
	c.blob = a.Bool("blob")
	if c.blob && (c.large || c.batch > 1) {
		return nil, fmt.Errorf("--blob takes neither --large nor --batch")
	}
	if c.channels > dmxp.MaxChannels {
		return nil, fmt.Errorf("num_channels %d exceeds %d", c.channels, dmxp.MaxChannels)
	}
	return c, nil
}

func sendAll(seg *dmxp.Segment, cfg *config, id uint32) (r result) {
	r.channel = id
	ch, _, err := seg.OpenOrCreateChannelWith(id, cfg.capacity, dmxp.ChannelOptions{MaxMessageSize: cfg.maxMessageSize, Blobs: cfg.blob}, 10*time.Second)
	if err != nil {
		r.err = fmt.Errorf("channel %d: %w", id, err)
		return r
	}
	if cfg.blob {
		return sendBlobs(ch, cfg, id)
	}
	limit := ch.MaxMessageSize()
	length := pattern.DefaultLen
	encode := pattern.AppendEncode
	if cfg.large {
		if limit < largeMin {
			r.err = fmt.Errorf("channel %d: --large needs a channel that takes messages of %d bytes; its max message size is %d", id, largeMin, limit)
			return r
		}
		length = func(index uint64) int { return pattern.LargeLen(index, limit) }
		encode = pattern.AppendEncodeLarge
	}
	// Crash protection (PROTOCOL.md §11): this goroutine's handle is registered as a producer.
	if err := ch.Register(dmxp.RoleProducer); err != nil {
		fmt.Fprintf(os.Stderr, "producer: channel %d: not registered in the peer table (%v): no crash protection\n", id, err)
	}
	defer ch.Close()
	patience := cfg.fullWait
	started := time.Now()
	end := cfg.first + cfg.messages
	if cfg.batch > 1 {
		bufs := make([][]byte, cfg.batch)
		for i := range bufs {
			bufs[i] = make([]byte, 0, pattern.MaxLen)
		}
		var large []byte
		for index := cfg.first; index < end; {
			if n := length(index); n > dmxp.MsgInline {
				// A batch carries single-slot messages only: this one goes alone.
				large = encode(large[:0], id, index, n)
				_, err := ch.TrySend(large)
				if err == dmxp.ErrFull {
					r.full++
					_, err = ch.SendTimeout(large, patience)
				}
				if err != nil {
					r.err = fmt.Errorf("channel %d: %w", id, err)
					break
				}
				index++
				r.sent++
				continue
			}
			n := uint64(0)
			for n < cfg.batch && index+n < end && length(index+n) <= dmxp.MsgInline {
				n++
			}
			batch := bufs[:n]
			for k := range batch {
				i := index + uint64(k)
				batch[k] = encode(batch[k][:0], id, i, length(i))
			}
			sent, err := ch.TrySendBatch(batch, dmxp.SendOptions{})
			if err == dmxp.ErrFull {
				r.full++
				sent, err = ch.SendBatch(batch, dmxp.SendOptions{}, patience)
			} else if err == nil && sent < len(batch) {
				var more int
				more, err = ch.SendBatch(batch[sent:], dmxp.SendOptions{}, patience)
				sent += more
			}
			index += uint64(sent)
			r.sent += uint64(sent)
			if err != nil {
				r.err = fmt.Errorf("channel %d: %w", id, err)
				break
			}
		}
	} else {
		buf := make([]byte, 0, pattern.MaxLen)
		for index := cfg.first; index < end; index++ {
			buf = encode(buf[:0], id, index, length(index))
			_, err := ch.TrySend(buf)
			if err == dmxp.ErrFull {
				r.full++
				_, err = ch.SendTimeout(buf, patience)
			}
			if err != nil {
				r.err = fmt.Errorf("channel %d: %w", id, err)
				break
			}
			r.sent++
		}
	}
	r.elapsed = time.Since(started)
	return r
}

// sendBlobs is sendAll with --blob: every message a blob written in place into a loaned block.
func sendBlobs(ch *dmxp.Channel, cfg *config, id uint32) (r result) {
	r.channel = id
	if !ch.CarriesBlobs() {
		r.err = fmt.Errorf("channel %d: --blob needs a channel that carries blobs (created with BLOBS in a segment with a blob pool)", id)
		return r
	}
	if max := ch.MaxBlobSize(); max < blobLens[4] {
		r.err = fmt.Errorf("channel %d: --blob needs blocks of %d bytes; the pool's largest is %d", id, blobLens[4], max)
		return r
	}
	// Loans need a registered producer: a block's owner is its peer record.
	if err := ch.Register(dmxp.RoleProducer); err != nil {
		r.err = fmt.Errorf("channel %d: --blob needs a handle registered in the peer table: %w", id, err)
		return r
	}
	defer ch.Close()
	patience := cfg.fullWait
	started := time.Now()
	for index := cfg.first; index < cfg.first+cfg.messages; index++ {
		n := blobLen(index)
		loan, err := ch.LoanBlob(n)
		if errors.Is(err, dmxp.ErrPoolExhausted) {
			r.full++
			loan, err = ch.LoanBlobTimeout(n, blobLoanWait)
		}
		if err != nil {
			r.err = fmt.Errorf("channel %d: loan of %d bytes: %w", id, n, err)
			break
		}
		// The pattern is written in place: the view's capacity is n, so append fills the block.
		if b := pattern.AppendEncodeLarge(loan.Bytes()[:0], id, index, n); len(b) != n || &b[0] != &loan.Bytes()[0] {
			_ = loan.Abandon()
			r.err = fmt.Errorf("channel %d: pattern of %d bytes not written in place", id, n)
			break
		}
		_, err = loan.Commit(dmxp.SendOptions{})
		if err == dmxp.ErrFull {
			r.full++
			_, err = loan.CommitTimeout(dmxp.SendOptions{}, patience)
		}
		if err != nil {
			_ = loan.Abandon() // gives the block back when the commit left the loan ours
			r.err = fmt.Errorf("channel %d: %w", id, err)
			break
		}
		r.sent++
	}
	r.elapsed = time.Since(started)
	return r
}

func main() {
	cfg, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "producer: %v\n%s\n", err, usage)
		os.Exit(2)
	}
	opts := &dmxp.Options{
		Size:    int64(cfg.size),
		Mode:    cfg.mode,
		Timeout: 5 * time.Second,
		Trust:   dmxp.Trust{Owners: cfg.trustOwners},
	}
	if cfg.blob {
		opts.BlobPool = blobClasses
	}
	seg, err := dmxp.OpenOrCreate(cfg.segment, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "producer: segment %s: %v\n", cfg.segment, err)
		os.Exit(1)
	}
	started := time.Now()
	results := make([]result, cfg.channels)
	var wg sync.WaitGroup
	for c := uint64(0); c < cfg.channels; c++ {
		wg.Add(1)
		go func(c uint64) {
			defer wg.Done()
			results[c] = sendAll(seg, cfg, uint32(c))
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(started)
	failed := false
	var total uint64
	for _, r := range results {
		total += r.sent
		if r.err != nil {
			fmt.Fprintf(os.Stderr, "producer: %v\n", r.err)
			failed = true
			continue
		}
		fmt.Printf("producer: channel %d: sent %d in %v (%.0f msgs/s), ring full %d times\n",
			r.channel, r.sent, r.elapsed.Round(time.Microsecond), float64(r.sent)/r.elapsed.Seconds(), r.full)
	}
	fmt.Printf("producer: sent %d messages on %d channels of %s in %v: %.0f msgs/s\n",
		total, cfg.channels, cfg.segment, elapsed.Round(time.Microsecond), float64(total)/elapsed.Seconds())
	if failed {
		os.Exit(1)
	}
}
