package dmxp_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"dmxp.dev/dmxp"
)

// goTool is the go command of the toolchain running the tests.
func goTool(t *testing.T) string {
	t.Helper()
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build cmd/producer and cmd/consumer")
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// runProgram runs a built program and returns its exit status, stdout and stderr.
func runProgram(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "DMXP_SEGMENT=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("%s: %v", bin, err)
	return 0, "", ""
}

func shmSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// The example programs refuse a segment of uid 65534 with mode 0666 with a one-line error
// and exit status 1, leaving it untouched, and use it with --trust-owner 65534 --mode 0666.
func TestProgramsTrustFlags(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test gives a segment to uid 65534 (chown), which only root may do")
	}
	if st, err := os.Stat("/dev/shm"); err != nil || !st.IsDir() {
		t.Skip("no /dev/shm")
	}
	bin := t.TempDir()
	build := exec.Command(goTool(t), "build", "-o", bin+string(os.PathSeparator), "./cmd/producer", "./cmd/consumer")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	producer, consumer := filepath.Join(bin, "producer"), filepath.Join(bin, "consumer")

	name := fmt.Sprintf("/dmxp_gotest_cmdtrust_%d", os.Getpid())
	path := "/dev/shm" + name
	t.Cleanup(func() { os.Remove(path) })
	seg, err := dmxp.Create(name, &dmxp.Options{Size: dmxp.HeaderSize + 64*dmxp.SlotSize})
	if err != nil {
		t.Fatal(err)
	}
	seg.Close()
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	before := shmSum(t, path)

	for _, run := range [][]string{
		{producer, "1", "1", "4", "--segment", name},
		{consumer, "1", "1", "--segment", name, "--wait", "1"},
		{producer, "1", "1", "4", "--segment", name, "--trust-owner", "65534"},
		{consumer, "1", "1", "--segment", name, "--wait", "1", "--mode", "0666"},
	} {
		what := filepath.Base(run[0]) + " " + strings.Join(run[1:], " ")
		code, _, stderr := runProgram(t, run[0], run[1:]...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "untrusted shm segment "+name) ||
			!strings.Contains(lines[0], "owned by uid 65534") || !strings.Contains(lines[0], "mode 0666") {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 and one line naming the owner and mode", what, code, stderr)
		}
	}
	if shmSum(t, path) != before {
		t.Errorf("a refused segment was modified")
	}

	code, out, stderr := runProgram(t, producer, "1", "3", "4", "--segment", name, "--trust-owner", "65534", "--mode", "0666")
	if code != 0 {
		t.Fatalf("producer with --trust-owner 65534 --mode 0666: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = runProgram(t, consumer, "1", "3", "--segment", name, "--wait", "5", "--trust-owner", "65534", "--mode", "666")
	if code != 0 || !strings.Contains(out, "received 3 messages") {
		t.Errorf("consumer with --trust-owner 65534 --mode 666: exit %d\n%s%s", code, out, stderr)
	}

	for _, bad := range [][]string{{"--mode", "0999"}, {"--mode", "0"}, {"--mode", "01777"}, {"--trust-owner", "nobody"}} {
		args := append([]string{"1", "1", "--segment", name}, bad...)
		if code, _, stderr := runProgram(t, consumer, args...); code != 2 || !strings.Contains(stderr, "--"+strings.TrimPrefix(bad[0], "--")) {
			t.Errorf("consumer %v: exit %d, stderr %q; want a usage error", bad, code, stderr)
		}
	}
}
