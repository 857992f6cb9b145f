// Command churn_consumer is a consumer for the crash churn soak (scripts/soak_churn.py):
//
//	churn_consumer SEGMENT
//
// It attaches to the existing segment SEGMENT (default trust policy), opens channel 0,
// registers the handle as a consumer (crash protection, PROTOCOL.md §11) and receives one
// message at a time until it is killed, writing each payload to stdout as one line with one
// unbuffered write (a kill loses at most the one message it had taken). LOST tombstones,
// revoked receives and corrupt slots are passed over. Other errors: one line on stderr, exit
// status 1.
package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"dmxp.dev/dmxp"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: churn_consumer SEGMENT")
		os.Exit(2)
	}
	seg, err := dmxp.Open(os.Args[1], &dmxp.Options{Timeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintf(os.Stderr, "churn_consumer: segment %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	ch, err := seg.WaitChannel(0, 5*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "churn_consumer: channel 0: %v\n", err)
		os.Exit(1)
	}
	if err := ch.Register(dmxp.RoleConsumer); err != nil {
		fmt.Fprintf(os.Stderr, "churn_consumer: not registered (%v): no crash protection\n", err)
	}
	buf := make([]byte, dmxp.MsgInline)
	line := make([]byte, 0, dmxp.MsgInline+1)
	for {
		meta, err := ch.ReceiveTimeout(buf, 200*time.Millisecond)
		switch {
		case err == nil:
			line = append(append(line[:0], buf[:meta.PayloadLen]...), '\n')
			if _, err := os.Stdout.Write(line); err != nil {
				os.Exit(1) // the reader is gone
			}
		case errors.Is(err, dmxp.ErrTimeout), errors.Is(err, dmxp.ErrEmpty),
			errors.Is(err, dmxp.ErrLost), errors.Is(err, dmxp.ErrRevoked),
			errors.Is(err, dmxp.ErrCorruptMessage), errors.Is(err, dmxp.ErrBusy):
		default:
			fmt.Fprintf(os.Stderr, "churn_consumer: receive: %v\n", err)
			os.Exit(1)
		}
	}
}
