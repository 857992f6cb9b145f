package dmxp_test

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"dmxp.dev/dmxp"
)

// README.md's Go code must compile and say what the code does: every ```go block is either
// the quick-start program (package main), whose functions are copies of example_test.go's
// and which TestReadmeQuickStart builds and runs, or a copy of code in example_test.go, which
// go test compiles and runs with its // Output: checks.

// readmeGoBlocks returns the contents of README.md's ```go blocks.
func readmeGoBlocks(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	var block strings.Builder
	in := false
	for _, line := range strings.SplitAfter(string(readme), "\n") {
		switch {
		case !in && strings.TrimSpace(line) == "```go":
			in = true
			block.Reset()
		case in && strings.TrimSpace(line) == "```":
			in = false
			blocks = append(blocks, block.String())
		case in:
			block.WriteString(line)
		}
	}
	if in {
		t.Fatal("README.md: unterminated ```go block")
	}
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```go block")
	}
	return blocks
}

// readmeProgram is README.md's quick-start program.
func readmeProgram(t *testing.T) string {
	t.Helper()
	var programs []string
	for _, b := range readmeGoBlocks(t) {
		if strings.Contains(b, "\npackage main\n") || strings.HasPrefix(b, "package main\n") {
			programs = append(programs, b)
		}
	}
	if len(programs) != 1 {
		t.Fatalf("README.md has %d programs (package main); want 1", len(programs))
	}
	return programs[0]
}

func TestReadmeSnippetsAreExamples(t *testing.T) {
	examples, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	program := readmeProgram(t)
	for i, b := range readmeGoBlocks(t) {
		if b == program {
			continue
		}
		if !bytes.Contains(examples, []byte(b)) {
			t.Errorf("README.md's ```go block %d is not a copy of code in example_test.go:\n%s", i+1, b)
		}
	}
	// The program's functions other than main are example_test.go's, comments included.
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "README.md", program, parser.ParseComments)
	if err != nil {
		t.Fatalf("README.md's program does not parse: %v", err)
	}
	funcs := 0
	for _, decl := range file.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Name.Name == "main" {
			continue
		}
		funcs++
		start := fn.Pos()
		if fn.Doc != nil {
			start = fn.Doc.Pos()
		}
		text := program[fset.Position(start).Offset:fset.Position(fn.End()).Offset]
		if !bytes.Contains(examples, []byte(text)) {
			t.Errorf("README.md's func %s is not a copy of example_test.go's", fn.Name.Name)
		}
	}
	if funcs == 0 {
		t.Errorf("README.md's program has no function besides main")
	}
}

// TestReadmeQuickStart builds the quick start as README.md says (a module of its own that
// requires dmxp.dev/dmxp v0.0.0 and replaces it with this directory, no proxy) and runs it as
// two processes, the consumer first, on a segment name of its own.
func TestReadmeQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program: not in -short mode")
	}
	goCmd := goTool(t)
	program := readmeProgram(t)
	name := fmt.Sprintf("/dmxp_gotest_quickstart_%d", os.Getpid())
	source := strings.Replace(program, strconv.Quote("/dmxp_quickstart"), strconv.Quote(name), 1)
	if source == program {
		t.Fatal(`README.md's program does not name the segment "/dmxp_quickstart"`)
	}
	moduleDir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(source), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod", "GOWORK=off")
	for _, args := range [][]string{
		{"mod", "init", "example.com/myapp"},
		{"mod", "edit", "-require=dmxp.dev/dmxp@v0.0.0", "-replace=dmxp.dev/dmxp=" + moduleDir},
		{"build", "-o", "quickstart", "."},
	} {
		cmd := exec.Command(goCmd, args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	bin := filepath.Join(dir, "quickstart")
	defer dmxp.Unlink(name) // if the consumer failed before removing it

	var consumerOut, consumerErr bytes.Buffer
	consumer := exec.Command(bin, "consume")
	consumer.Stdout, consumer.Stderr = &consumerOut, &consumerErr
	if err := consumer.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let it look for the segment before there is one
	if out, err := exec.Command(bin, "produce").CombinedOutput(); err != nil {
		consumer.Process.Kill()
		consumer.Wait()
		t.Fatalf("quickstart produce: %v\n%s", err, out)
	}
	if err := consumer.Wait(); err != nil {
		t.Fatalf("quickstart consume: %v\n%s", err, consumerErr.String())
	}
	want := "message 0: hello 0\nmessage 1: hello 1\nmessage 2: hello 2\n"
	if got := consumerOut.String(); got != want {
		t.Errorf("quickstart consume printed %q; want %q", got, want)
	}
	if _, err := os.Stat("/dev/shm" + name); !os.IsNotExist(err) {
		t.Errorf("the consumer did not remove the segment: stat: %v", err)
	}
}
