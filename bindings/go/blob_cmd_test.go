package dmxp_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"dmxp.dev/dmxp"
)

// The example programs' --blob switch (the interop contract): a Go producer and a Go consumer
// move blobs of 24 bytes to 4 MiB through the pool of three classes, exactly once, and every
// block is back in the pool afterwards.
func TestProgramsBlob(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the --blob programs")
	}
	bin := t.TempDir()
	build := exec.Command(goTool(t), "build", "-o", bin+string(os.PathSeparator), "./cmd/producer", "./cmd/consumer")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	producer, consumer := filepath.Join(bin, "producer"), filepath.Join(bin, "consumer")
	name := fmt.Sprintf("/dmxp_goblob_%d", os.Getpid())
	_ = dmxp.Unlink(name)
	t.Cleanup(func() { _ = dmxp.Unlink(name) })

	if code, _, stderr := runProgram(t, producer, "1", "1", "--segment", name, "--blob", "--batch", "4"); code != 2 || !strings.Contains(stderr, "--blob") {
		t.Errorf("--blob with --batch: exit %d, %s", code, stderr)
	}

	const channels, messages = "2", "30"
	cons := exec.Command(consumer, channels, messages, "--segment", name, "--blob", "--wait", "60")
	cons.Env = append(os.Environ(), "DMXP_SEGMENT=")
	var consOut, consErr bytes.Buffer
	cons.Stdout, cons.Stderr = &consOut, &consErr
	if err := cons.Start(); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runProgram(t, producer, channels, messages, "8", "--segment", name, "--blob")
	if code != 0 {
		_ = cons.Process.Kill()
		_ = cons.Wait()
		t.Fatalf("producer: exit %d\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "sent 60 messages on 2 channels") {
		t.Errorf("producer said %s", stdout)
	}
	if err := cons.Wait(); err != nil {
		t.Fatalf("consumer: %v\n%s%s", err, consOut.String(), consErr.String())
	}
	if out := consOut.String(); !strings.Contains(out, "received 60 messages on 2 channels") ||
		!strings.Contains(out, "missing 0, duplicated 0, corrupt 0") {
		t.Errorf("consumer said %s%s", out, consErr.String())
	}

	seg, err := dmxp.Open(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	g, ok := seg.BlobPool()
	want := []dmxp.BlobClassGeometry{{BlockSize: 65536, BlockCount: 32}, {BlockSize: 1048576, BlockCount: 8}, {BlockSize: 4194304, BlockCount: 6}}
	if !ok || len(g.Classes) != 3 || seg.Len() != dmxp.DefaultSegmentSize {
		t.Fatalf("pool %+v, segment of %d bytes", g, seg.Len())
	}
	for i, w := range want {
		if g.Classes[i].BlockSize != w.BlockSize || g.Classes[i].BlockCount != w.BlockCount {
			t.Errorf("class %d: %+v", i, g.Classes[i])
		}
	}
	st, _ := seg.BlobPoolStats()
	if st.FreeBlocks() != 46 || len(st.Owners) != 0 {
		t.Errorf("pool after the run: %+v", st)
	}
	for id := uint32(0); id < 2; id++ {
		ch, err := seg.OpenChannel(id)
		if err != nil || !ch.CarriesBlobs() || ch.Capacity() != 8 {
			t.Errorf("channel %d: %v", id, err)
		}
	}
}
