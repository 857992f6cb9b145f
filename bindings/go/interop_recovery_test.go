package dmxp_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"dmxp.dev/dmxp"
	"dmxp.dev/dmxp/pattern"
)

// A Go producer dies holding a claimed, unpublished position; the Rust producer example then
// sends on the same channel (blocking on the full ring behind the dead claim) while a
// registered Go consumer repairs the dead claim and receives everything: one lost message at
// the dead position, then every message of the Rust producer exactly once.
func TestInteropRecoveryRustProducerGoConsumer(t *testing.T) {
	tl := buildTools(t)
	name := segmentName(t)
	seg, err := dmxp.Create(name, &dmxp.Options{Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	if _, _, err := seg.OpenOrCreateChannel(0, 64, time.Second); err != nil {
		t.Fatal(err)
	}
	// The dying producer: this test binary re-run as TestHelperPeer (recovery_test.go).
	child := exec.Command(os.Args[0], "-test.run=^TestHelperPeer$")
	child.Env = append(os.Environ(), "DMXP_TEST_PEER_HELPER=producer:"+seg.Path()+":0")
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "POS 0" {
		_ = child.Process.Kill()
		_ = child.Wait()
		t.Fatalf("helper said %q", line)
	}
	_ = child.Process.Kill()
	_ = child.Wait()

	cons, err := seg.OpenChannel(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := cons.Register(dmxp.RoleConsumer); err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	const n = 2000
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	producer := start(t, ctx, tl.rustProducer, "1", fmt.Sprint(n), "64", "--segment", name)
	seen := make([]bool, n)
	received, lost := 0, 0
	buf := make([]byte, dmxp.MsgInline)
	for received < n {
		meta, err := cons.ReceiveTimeout(buf, 30*time.Second)
		var le *dmxp.LostError
		if errors.As(err, &le) {
			if le.MessageID != 0 {
				t.Fatalf("lost message %d; want 0", le.MessageID)
			}
			lost++
			continue
		}
		if err != nil {
			t.Fatalf("after %d messages: %v", received, err)
		}
		channel, index, err := pattern.Decode(buf[:meta.PayloadLen])
		if err != nil || channel != 0 || index >= n || seen[index] {
			t.Fatalf("message %d: channel %d index %d err %v (duplicate: %v)", meta.MessageID, channel, index, err, index < n && seen[index])
		}
		if meta.SenderRuntime != dmxp.RuntimeRust || meta.MessageID != index+1 {
			t.Fatalf("message %d: runtime %d index %d", meta.MessageID, meta.SenderRuntime, index)
		}
		seen[index] = true
		received++
	}
	producer.wait(t)
	if lost != 1 || cons.Stats().Lost != 1 {
		t.Fatalf("lost %d (stats %+v); want exactly 1", lost, cons.Stats())
	}
	if err := seg.ValidateAll(); err != nil {
		t.Fatal(err)
	}
}
