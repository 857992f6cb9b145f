package dmxp_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"dmxp.dev/dmxp"
)

// These examples run with go test and check their output. README.md's snippets are copies of
// the functions below (readme_test.go checks that they stay so). Each example uses a segment
// name of its own, suffixed with the process id, and removes the segment.

// produce creates the segment (or attaches to it) and channel 0, and sends three messages.
func produce(name string) error {
	seg, err := dmxp.OpenOrCreate(name, &dmxp.Options{Size: 1 << 20})
	if err != nil {
		return err
	}
	defer seg.Close()
	ch, _, err := seg.OpenOrCreateChannel(0, 64, time.Second)
	if err != nil {
		return err
	}
	for i := 0; i < 3; i++ {
		if _, err := ch.Send([]byte(fmt.Sprintf("hello %d", i))); err != nil {
			return err
		}
	}
	return nil
}

// consume waits for the segment and channel 0, receives three messages, then removes the
// segment.
func consume(name string) error {
	var seg *dmxp.Segment
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		seg, err = dmxp.Open(name, nil) // does not wait for a missing segment
		if err == nil {
			break
		}
		if !errors.Is(err, dmxp.ErrNotFound) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer seg.Close()
	ch, err := seg.WaitChannel(0, 10*time.Second)
	if err != nil {
		return err
	}
	buf := make([]byte, dmxp.MsgInline) // room for any message
	for i := 0; i < 3; i++ {
		meta, err := ch.ReceiveTimeout(buf, 10*time.Second)
		if err != nil {
			return err
		}
		fmt.Printf("message %d: %s\n", meta.MessageID, buf[:meta.PayloadLen])
	}
	return dmxp.Unlink(name)
}

// describe sorts an error of this package with errors.Is and errors.As.
func describe(err error) string {
	var untrusted *dmxp.UntrustedError
	var corrupt *dmxp.CorruptionError
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, dmxp.ErrNotFound): // no such segment or channel
		return "not found"
	case errors.Is(err, dmxp.ErrEmpty), errors.Is(err, dmxp.ErrFull):
		return "try again later"
	case errors.Is(err, dmxp.ErrTimeout):
		return "timed out"
	case errors.As(err, &untrusted): // matches dmxp.ErrUntrusted
		return fmt.Sprintf("untrusted: mode %#o, at most %#o allowed", untrusted.Mode, untrusted.Asked)
	case errors.As(err, &corrupt): // matches dmxp.ErrCorrupt
		return "corrupt " + corrupt.Field
	}
	return "other: " + err.Error()
}

// Example is the quick start of README.md in one process: consume runs in a goroutine here,
// in a second process there.
func Example() {
	name := fmt.Sprintf("/dmxp_example_quickstart_%d", os.Getpid())
	done := make(chan error)
	go func() { done <- consume(name) }()
	if err := produce(name); err != nil {
		fmt.Println("produce:", err)
	}
	if err := <-done; err != nil {
		fmt.Println("consume:", err)
	}
	// Output:
	// message 0: hello 0
	// message 1: hello 1
	// message 2: hello 2
}

// Create makes a POSIX shm segment (/dev/shm/<name>) exclusively; it stays until Unlink.
func ExampleCreate() {
	name := fmt.Sprintf("/dmxp_example_create_%d", os.Getpid())
	seg, err := dmxp.Create(name, &dmxp.Options{Size: 1 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dmxp.Unlink(name)
	defer seg.Close()
	ch, err := seg.CreateChannel(3, 16)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("created:", seg.Created(), "channel:", ch.ID(), "capacity:", ch.Capacity())

	_, err = dmxp.Create(name, nil)
	fmt.Println("again:", errors.Is(err, dmxp.ErrExists), errors.Is(err, fs.ErrExist))
	_, err = seg.CreateChannel(3, 16)
	fmt.Println("channel again:", errors.Is(err, dmxp.ErrExists))
	// Output:
	// created: true channel: 3 capacity: 16
	// again: true true
	// channel again: true
}

// A file-backed segment: CreatePath and OpenPath take a file path instead of a shm name.
func ExampleCreatePath() {
	dir, err := os.MkdirTemp("", "dmxp_example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "segment")
	seg, err := dmxp.CreatePath(path, &dmxp.Options{Size: 1 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer seg.Close()
	if _, err := seg.CreateChannel(0, 8); err != nil {
		fmt.Println(err)
		return
	}

	// What another process does: attach, then open the channel.
	other, err := dmxp.OpenPath(path, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer other.Close()
	ch, err := other.OpenChannel(0)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("created:", other.Created(), "capacity:", ch.Capacity())
	// Output:
	// created: false capacity: 8
}

// Open attaches to a segment another process made; a missing one fails at once.
func ExampleOpen() {
	name := fmt.Sprintf("/dmxp_example_open_%d", os.Getpid())
	_, err := dmxp.Open(name, nil)
	fmt.Println("before:", describe(err))

	seg, err := dmxp.Create(name, &dmxp.Options{Size: 1 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dmxp.Unlink(name)
	defer seg.Close()
	other, err := dmxp.Open(name, nil)
	fmt.Println("after:", describe(err))
	if err == nil {
		other.Close()
	}
	// Output:
	// before: not found
	// after: ok
}

// A missing segment matches ErrNotFound (as a missing channel does) and, underneath,
// fs.ErrNotExist; errors.As gives the details.
func ExampleSegmentNotFoundError() {
	path := filepath.Join(os.TempDir(), fmt.Sprintf("dmxp_example_missing_%d", os.Getpid()))
	_, err := dmxp.OpenPath(path, nil)
	fmt.Println(errors.Is(err, dmxp.ErrNotFound), errors.Is(err, fs.ErrNotExist))
	var missing *dmxp.SegmentNotFoundError
	if errors.As(err, &missing) {
		fmt.Println(missing.Segment == "file segment "+path)
	}
	// Output:
	// true true
	// true
}

// OpenChannel does not wait: a channel nobody created yet is ErrNotFound (WaitChannel waits).
func ExampleSegment_OpenChannel() {
	name := fmt.Sprintf("/dmxp_example_openchannel_%d", os.Getpid())
	seg, err := dmxp.Create(name, &dmxp.Options{Size: 1 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dmxp.Unlink(name)
	defer seg.Close()

	_, err = seg.OpenChannel(5)
	fmt.Println("before:", describe(err))
	var nf *dmxp.NotFoundError
	if errors.As(err, &nf) {
		fmt.Println("missing channel:", nf.Channel)
	}
	if _, err := seg.CreateChannel(5, 4); err != nil {
		fmt.Println(err)
		return
	}
	ch, err := seg.OpenChannel(5)
	fmt.Println("after:", describe(err))
	if err == nil {
		fmt.Println("capacity:", ch.Capacity())
	}
	// Output:
	// before: not found
	// missing channel: 5
	// after: ok
	// capacity: 4
}

// A round trip: Send waits while the ring is full, Receive while it is empty.
func ExampleChannel_Send() {
	name := fmt.Sprintf("/dmxp_example_send_%d", os.Getpid())
	seg, err := dmxp.Create(name, &dmxp.Options{Size: 1 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dmxp.Unlink(name)
	defer seg.Close()
	ch, err := seg.CreateChannel(0, 8)
	if err != nil {
		fmt.Println(err)
		return
	}

	id, err := ch.SendWith([]byte("ping"), dmxp.SendOptions{MessageType: 7}, time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("sent message", id)

	buf := make([]byte, dmxp.MsgInline)
	meta, err := ch.Receive(buf)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("received message %d, type %d, from pid %v: %q\n",
		meta.MessageID, meta.MessageType, meta.SenderPID == uint32(os.Getpid()), buf[:meta.PayloadLen])
	// Output:
	// sent message 0
	// received message 0, type 7, from pid true: "ping"
}

// TryReceive never waits for a message: on an empty channel it fails with ErrEmpty.
// ReceiveTimeout waits, and fails with ErrTimeout.
func ExampleChannel_TryReceive() {
	name := fmt.Sprintf("/dmxp_example_tryreceive_%d", os.Getpid())
	seg, err := dmxp.Create(name, &dmxp.Options{Size: 1 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dmxp.Unlink(name)
	defer seg.Close()
	ch, err := seg.CreateChannel(0, 8)
	if err != nil {
		fmt.Println(err)
		return
	}

	buf := make([]byte, dmxp.MsgInline)
	_, err = ch.TryReceive(buf)
	fmt.Println("TryReceive:", errors.Is(err, dmxp.ErrEmpty), describe(err))
	_, err = ch.ReceiveTimeout(buf, 10*time.Millisecond)
	fmt.Println("ReceiveTimeout:", errors.Is(err, dmxp.ErrTimeout), describe(err))

	if _, err := ch.TrySend([]byte("now there is one")); err != nil {
		fmt.Println(err)
		return
	}
	meta, err := ch.TryReceive(buf)
	fmt.Println("TryReceive:", describe(err), string(buf[:meta.PayloadLen]))
	// Output:
	// TryReceive: true try again later
	// ReceiveTimeout: true timed out
	// TryReceive: ok now there is one
}

// TrySend never waits for space: on a full channel it fails with ErrFull.
func ExampleChannel_TrySend() {
	name := fmt.Sprintf("/dmxp_example_trysend_%d", os.Getpid())
	seg, err := dmxp.Create(name, &dmxp.Options{Size: 1 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dmxp.Unlink(name)
	defer seg.Close()
	ch, err := seg.CreateChannel(0, 2) // two slots
	if err != nil {
		fmt.Println(err)
		return
	}
	for i := 0; i < 3; i++ {
		id, err := ch.TrySend([]byte{byte(i)})
		fmt.Println(id, describe(err), errors.Is(err, dmxp.ErrFull))
	}
	// Output:
	// 0 ok false
	// 1 ok false
	// 0 try again later true
}

// An attach refuses an object whose mode grants more than asked for (0600 by default) with an
// *UntrustedError, before mapping anything.
func ExampleUntrustedError() {
	dir, err := os.MkdirTemp("", "dmxp_example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "segment")
	seg, err := dmxp.CreatePath(path, &dmxp.Options{Size: 1 << 20, Mode: 0o644})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer seg.Close()

	_, err = dmxp.OpenPath(path, nil)
	fmt.Println(errors.Is(err, dmxp.ErrUntrusted), describe(err))
	other, err := dmxp.OpenPath(path, &dmxp.Options{Mode: 0o644}) // accept what it grants
	fmt.Println(describe(err))
	if err == nil {
		other.Close()
	}
	// Output:
	// true untrusted: mode 0644, at most 0600 allowed
	// ok
}

// A channel created with a message limit above one slot (960 bytes) carries longer messages:
// each travels as a run of consecutive slots and is received whole.
func ExampleSegment_CreateChannelWith() {
	name := fmt.Sprintf("/dmxp_example_large_%d", os.Getpid())
	seg, err := dmxp.Create(name, &dmxp.Options{Size: 1 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dmxp.Unlink(name)
	defer seg.Close()
	// 64 slots hold at most 64 × 960 bytes; a 16 KiB message takes 18 of them.
	ch, err := seg.CreateChannelWith(0, 64, dmxp.ChannelOptions{MaxMessageSize: 16 << 10})
	if err != nil {
		fmt.Println(err)
		return
	}
	big := make([]byte, 10000)
	big[9999] = 42
	if _, err := ch.Send(big); err != nil {
		fmt.Println(err)
		return
	}
	_, err = ch.TrySend(make([]byte, 20000))
	fmt.Println(errors.Is(err, dmxp.ErrTooLarge), err)

	buf := make([]byte, ch.MaxMessageSize()) // a buffer of the limit takes any message
	meta, err := ch.TryReceive(buf)
	fmt.Println(meta.PayloadLen, buf[meta.PayloadLen-1], meta.Flags&dmxp.FlagRun != 0, err)
	// Output:
	// true dmxp: message of 20000 bytes exceeds the 16384-byte limit
	// 10000 42 true <nil>
}
