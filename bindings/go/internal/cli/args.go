// Package cli parses the command lines of the example programs: positional arguments and
// --flags in any order ("--name value" or "--name=value").
package cli

import (
	"fmt"
	"strconv"
	"strings"
)

// Args holds the parsed positionals and flag values.
type Args struct {
	Positional []string
	Flags      map[string]string
}

// Parse splits args into positionals and the flags named in known (each takes a value).
// "--" ends flag parsing.
func Parse(args []string, known []string) (*Args, error) {
	return ParseSwitches(args, known, nil)
}

// ParseSwitches is Parse with switches too: flags that take no value ("--name", or
// "--name=true" / "--name=false"), read with Bool.
func ParseSwitches(args []string, known, switches []string) (*Args, error) {
	isKnown, isSwitch := map[string]bool{}, map[string]bool{}
	for _, k := range known {
		isKnown[k] = true
	}
	for _, k := range switches {
		isSwitch[k] = true
	}
	out := &Args{Flags: map[string]string{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			out.Positional = append(out.Positional, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "--") || len(a) == 2 {
			out.Positional = append(out.Positional, a)
			continue
		}
		name, value, hasValue := strings.Cut(a[2:], "=")
		if name == "help" {
			return nil, fmt.Errorf("help requested")
		}
		if isSwitch[name] {
			if !hasValue {
				value = "true"
			}
			if value != "true" && value != "false" {
				return nil, fmt.Errorf("flag --%s takes no value (or =true, =false)", name)
			}
			out.Flags[name] = value
			continue
		}
		if !isKnown[name] {
			return nil, fmt.Errorf("unknown flag --%s", name)
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("flag --%s needs a value", name)
			}
			i++
			value = args[i]
		}
		out.Flags[name] = value
	}
	return out, nil
}

// Uint reads flag name as an unsigned integer, or def when absent.
func (a *Args) Uint(name string, def uint64) (uint64, error) {
	v, ok := a.Flags[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("--%s: %v", name, err)
	}
	return n, nil
}

// Bool reads switch name: true when given (ParseSwitches).
func (a *Args) Bool(name string) bool { return a.Flags[name] == "true" }

// String reads flag name, or def when absent.
func (a *Args) String(name, def string) string {
	if v, ok := a.Flags[name]; ok {
		return v
	}
	return def
}

// PositionalUint reads positional i as an unsigned integer, or def when absent.
func (a *Args) PositionalUint(i int, what string, def uint64, required bool) (uint64, error) {
	if i >= len(a.Positional) {
		if required {
			return 0, fmt.Errorf("missing <%s>", what)
		}
		return def, nil
	}
	n, err := strconv.ParseUint(a.Positional[i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("<%s>: %v", what, err)
	}
	return n, nil
}

// Mode reads flag name as octal permission bits ("0666", "666" or "0o666"), or 0 when absent.
func (a *Args) Mode(name string) (uint32, error) {
	v, ok := a.Flags[name]
	if !ok {
		return 0, nil
	}
	digits := strings.TrimPrefix(strings.TrimPrefix(v, "0o"), "0O")
	n, err := strconv.ParseUint(digits, 8, 32)
	if err != nil || n == 0 || n > 0o777 {
		return 0, fmt.Errorf("--%s: %q is not an octal mode between 1 and 0777", name, v)
	}
	return uint32(n), nil
}

// IDs reads flag name as one user or group id, or several separated by commas; nil when
// absent.
func (a *Args) IDs(name string) ([]int, error) {
	v, ok := a.Flags[name]
	if !ok {
		return nil, nil
	}
	var ids []int
	for _, part := range strings.Split(v, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(part), 10, 31)
		if err != nil {
			return nil, fmt.Errorf("--%s: %q is not a numeric id", name, part)
		}
		ids = append(ids, int(n))
	}
	return ids, nil
}
