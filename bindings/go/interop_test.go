package dmxp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"dmxp.dev/dmxp"
	"dmxp.dev/dmxp/pattern"
)

// Cross-language checks against the Rust examples (and the dmxp CLI when it builds). They
// need cargo; without it they skip with a message. DMXP_SKIP_INTEROP=1 skips them too.

const repoRoot = "../.."

type tools struct {
	goProducer, goConsumer     string
	rustProducer, rustConsumer string
	rustHelp                   string // the Rust producer's --help, to detect optional flags
	cli                        string // "" when the CLI did not build
	cliErr                     string
}

var (
	toolsOnce sync.Once
	built     tools
	buildErr  error
	skipWhy   string
)

func cargoTargetDir() (string, error) {
	out, err := exec.Command("cargo", "metadata", "--format-version", "1", "--no-deps", "--manifest-path", filepath.Join(repoRoot, "Cargo.toml")).Output()
	if err != nil {
		return "", fmt.Errorf("cargo metadata: %v", err)
	}
	var meta struct {
		TargetDirectory string `json:"target_directory"`
	}
	if err := json.Unmarshal(out, &meta); err != nil {
		return "", err
	}
	return meta.TargetDirectory, nil
}

func run(dir string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func buildTools(t *testing.T) tools {
	t.Helper()
	if os.Getenv("DMXP_SKIP_INTEROP") != "" {
		t.Skip("DMXP_SKIP_INTEROP is set: skipping the cross-language checks")
	}
	if testing.Short() {
		t.Skip("-short: skipping the cross-language checks")
	}
	toolsOnce.Do(func() {
		if _, err := exec.LookPath("cargo"); err != nil {
			skipWhy = "cargo is not installed: skipping the cross-language checks against the Rust examples"
			return
		}
		bin, err := os.MkdirTemp("", "dmxp-go-interop")
		if err != nil {
			buildErr = err
			return
		}
		built.goProducer, built.goConsumer = filepath.Join(bin, "producer"), filepath.Join(bin, "consumer")
		if buildErr = run(".", "go", "build", "-o", bin, "./cmd/producer", "./cmd/consumer"); buildErr != nil {
			return
		}
		if buildErr = run(repoRoot, "cargo", "build", "--release", "-p", "dmxp", "--example", "producer", "--example", "consumer"); buildErr != nil {
			return
		}
		target, err := cargoTargetDir()
		if err != nil {
			buildErr = err
			return
		}
		built.rustProducer = filepath.Join(target, "release", "examples", "producer")
		built.rustConsumer = filepath.Join(target, "release", "examples", "consumer")
		help, _ := exec.Command(built.rustProducer, "--help").CombinedOutput()
		built.rustHelp = string(help)
		if err := run(repoRoot, "cargo", "build", "--release", "-p", "dmxp-cli"); err != nil {
			built.cliErr = err.Error()
		} else {
			built.cli = filepath.Join(target, "release", "dmxp")
		}
	})
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	if buildErr != nil {
		t.Fatalf("building the programs: %v", buildErr)
	}
	return built
}

var segSeq int

func segmentName(t *testing.T) string {
	segSeq++
	name := fmt.Sprintf("/dmxp_gotest_interop_%d_%d", os.Getpid(), segSeq)
	t.Cleanup(func() { dmxp.Unlink(name) })
	return name
}

type proc struct {
	name string
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

func start(t *testing.T, ctx context.Context, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: filepath.Base(filepath.Dir(path)) + "/" + filepath.Base(path), done: make(chan error, 1)}
	p.cmd = exec.CommandContext(ctx, path, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p
}

// wait requires a zero exit and returns the output.
func (p *proc) wait(t *testing.T) string {
	t.Helper()
	err := <-p.done
	out := p.out.String()
	if err != nil {
		t.Errorf("%s %s: %v\n%s", p.name, strings.Join(p.cmd.Args[1:], " "), err, out)
	}
	return out
}

func contains(t *testing.T, out, want string) {
	t.Helper()
	if !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
}

func TestInteropGoProducerRustConsumer(t *testing.T) {
	tl := buildTools(t)
	for _, capacity := range []string{"4", "64"} {
		t.Run("capacity "+capacity, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			seg := segmentName(t)
			// The consumer starts first: it waits for the segment and sleeps on the futex words.
			consumer := start(t, ctx, tl.rustConsumer, "2", "20000", "--segment", seg, "--wait", "60")
			producer := start(t, ctx, tl.goProducer, "2", "20000", capacity, "--segment", seg)
			contains(t, producer.wait(t), "producer: sent 40000 messages on 2 channels")
			out := consumer.wait(t)
			contains(t, out, "received 40000 messages")
			contains(t, out, "duplicated 0, corrupt 0")
		})
	}
}

func TestInteropRustProducerGoConsumer(t *testing.T) {
	tl := buildTools(t)
	for _, capacity := range []string{"4", "64"} {
		t.Run("capacity "+capacity, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			seg := segmentName(t)
			consumer := start(t, ctx, tl.goConsumer, "--segment", seg, "2", "20000", "--wait", "60")
			producer := start(t, ctx, tl.rustProducer, "2", "20000", capacity, "--segment", seg)
			producer.wait(t)
			contains(t, consumer.wait(t), "received 40000 messages on 2 channels of "+seg)
		})
	}
}

// Two producers of different languages on the same channels (the Go one sends the second
// half of the indices), received by a consumer of each language in turn.
func TestInteropMixedProducers(t *testing.T) {
	tl := buildTools(t)
	for name, consumerPath := range map[string]string{"go consumer": tl.goConsumer, "rust consumer": tl.rustConsumer} {
		consumerPath := consumerPath
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			seg := segmentName(t)
			consumer := start(t, ctx, consumerPath, "2", "30000", "--segment", seg, "--wait", "60")
			rust := start(t, ctx, tl.rustProducer, "2", "15000", "8", "--segment", seg)
			goProducer := start(t, ctx, tl.goProducer, "2", "15000", "8", "--segment", seg, "--first-index", "15000", "--batch", "7")
			rust.wait(t)
			goProducer.wait(t)
			contains(t, consumer.wait(t), "received 60000 messages")
		})
	}
}

// A Go and a Rust consumer sharing one channel, every message received exactly once overall
// (needs --record and --idle-exit-ms in the Rust consumer).
func TestInteropSharedChannel(t *testing.T) {
	tl := buildTools(t)
	rustHelp, _ := exec.Command(tl.rustConsumer, "--help").CombinedOutput()
	if !strings.Contains(string(rustHelp), "--record") || !strings.Contains(string(rustHelp), "--idle-exit-ms") ||
		!strings.Contains(tl.rustHelp, "--first-index") {
		t.Skip("the Rust examples have no --record/--idle-exit-ms/--first-index yet: skipping the shared-channel check")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	seg := segmentName(t)
	dir := t.TempDir()
	goRec, rustRec := filepath.Join(dir, "go.rec"), filepath.Join(dir, "rust.rec")
	goConsumer := start(t, ctx, tl.goConsumer, "1", "40000", "--segment", seg, "--idle-exit-ms", "2000", "--record", goRec)
	rustConsumer := start(t, ctx, tl.rustConsumer, "1", "40000", "--segment", seg, "--idle-exit-ms", "2000", "--record", rustRec)
	goProducer := start(t, ctx, tl.goProducer, "1", "20000", "16", "--segment", seg)
	rustProducer := start(t, ctx, tl.rustProducer, "1", "20000", "16", "--segment", seg, "--first-index", "20000")
	goProducer.wait(t)
	rustProducer.wait(t)
	goConsumer.wait(t)
	rustConsumer.wait(t)
	counts := map[string]int{}
	for _, rec := range []string{goRec, rustRec} {
		data, err := os.ReadFile(rec)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Fields(strings.ReplaceAll(string(data), " ", ":")) {
			counts[line]++
		}
	}
	for i := 0; i < 40000; i++ {
		if n := counts[fmt.Sprintf("0:%d", i)]; n != 1 {
			t.Fatalf("message 0 %d received %d times across both consumers", i, n)
		}
	}
	if len(counts) != 40000 {
		t.Errorf("%d distinct records, want 40000", len(counts))
	}
}

// A segment the Go library wrote (channels, queued messages with metadata) passes the Rust
// validator, and the Rust consumer drains what the Go library queued.
func TestInteropRustValidatesGoSegment(t *testing.T) {
	tl := buildTools(t)
	name := segmentName(t)
	seg, err := dmxp.Create(name, &dmxp.Options{Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	for c := uint32(0); c < 3; c++ {
		ch, _, err := seg.OpenOrCreateChannel(c, 1<<(c+4), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for i := uint64(0); i < 10; i++ {
			if _, err := ch.TrySendWith(pattern.Encode(c, i, pattern.DefaultLen(i)), dmxp.SendOptions{MessageType: 5, Flags: 0x0100}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if tl.cli == "" {
		t.Logf("dmxp CLI did not build, skipping `dmxp inspect`: %s", firstLine(tl.cliErr))
	} else {
		out, err := exec.Command(tl.cli, "inspect", "--segment", name).CombinedOutput()
		if err != nil {
			t.Errorf("dmxp inspect --segment %s: %v\n%s", name, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := start(t, ctx, tl.rustConsumer, "3", "10", "--segment", name, "--wait", "10").wait(t)
	contains(t, out, "received 30 messages")
	for c := uint32(0); c < 3; c++ {
		ch, err := seg.OpenChannel(c)
		if err != nil {
			t.Fatal(err)
		}
		if ch.Head() != 10 || ch.HasMessage() {
			t.Errorf("channel %d: head %d after the Rust consumer", c, ch.Head())
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
