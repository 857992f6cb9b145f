// Command churn_producer is a producer for the crash churn soak (scripts/soak_churn.py):
//
//	churn_producer SEGMENT TAG
//
// It attaches to the existing segment SEGMENT (default trust policy), opens channel 0,
// registers the handle as a producer (crash protection, PROTOCOL.md §11) and sends the text
// payloads "TAG:0", "TAG:1", ... in order, waiting while the ring is full, until it is killed.
// A send that times out is retried with the same index; a revoked one (§11.7: it may or may
// not have been delivered) is not, so nothing is sent twice. Other errors: one line on stderr,
// exit status 1.
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"dmxp.dev/dmxp"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: churn_producer SEGMENT TAG")
		os.Exit(2)
	}
	seg, err := dmxp.Open(os.Args[1], &dmxp.Options{Timeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintf(os.Stderr, "churn_producer: segment %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	ch, err := seg.WaitChannel(0, 5*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "churn_producer: channel 0: %v\n", err)
		os.Exit(1)
	}
	if err := ch.Register(dmxp.RoleProducer); err != nil {
		fmt.Fprintf(os.Stderr, "churn_producer: not registered (%v): no crash protection\n", err)
	}
	prefix := append([]byte(os.Args[2]), ':')
	buf := make([]byte, 0, 256)
	for i := uint64(0); ; {
		buf = strconv.AppendUint(append(buf[:0], prefix...), i, 10)
		_, err := ch.SendTimeout(buf, 30*time.Second)
		switch {
		case err == nil || errors.Is(err, dmxp.ErrRevoked):
			i++
		case errors.Is(err, dmxp.ErrTimeout) || errors.Is(err, dmxp.ErrBusy):
		default:
			fmt.Fprintf(os.Stderr, "churn_producer: send: %v\n", err)
			os.Exit(1)
		}
	}
}
