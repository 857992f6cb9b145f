package dmxp_test

import (
	"errors"
	"fmt"
	"os"

	"dmxp.dev/dmxp"
)

// A blob pool (PROTOCOL.md §13): a producer loans a block, writes a 1 MiB payload in place and
// commits it as one ring slot; a consumer reads it in place and releases the block.
func ExampleChannel_LoanBlob() {
	name := fmt.Sprintf("/dmxp_example_blob_%d", os.Getpid())
	defer dmxp.Unlink(name)
	seg, err := dmxp.Create(name, &dmxp.Options{
		Size:     8 << 20,
		BlobPool: []dmxp.BlobClass{{BlockSize: 64 << 10, BlockCount: 8}, {BlockSize: 1 << 20, BlockCount: 2}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer seg.Close()
	tx, err := seg.CreateChannelWith(0, 16, dmxp.ChannelOptions{Blobs: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	rx, err := seg.OpenChannel(0) // one handle per role (and goroutine)
	if err != nil {
		fmt.Println(err)
		return
	}
	// Loans and in-place receives need registered handles: a block's owner is a peer record.
	if err := tx.Register(dmxp.RoleProducer); err != nil {
		fmt.Println(err)
		return
	}
	defer tx.Close()
	if err := rx.Register(dmxp.RoleConsumer); err != nil {
		fmt.Println(err)
		return
	}
	defer rx.Close()

	loan, err := tx.LoanBlob(1 << 20)
	if err != nil {
		fmt.Println(err)
		return
	}
	b := loan.Bytes() // the block itself, valid until Commit or Abandon
	for i := range b {
		b[i] = byte(i)
	}
	if _, err := loan.Commit(dmxp.SendOptions{MessageType: 7}); err != nil {
		fmt.Println(err)
		return
	}

	view, err := rx.TryReceiveBlob()
	if err != nil {
		fmt.Println(err)
		return
	}
	m := view.Meta()
	fmt.Println(view.IsBlob(), view.Len(), m.MessageType, m.Flags&dmxp.FlagBlob != 0, view.Bytes()[1000])
	if err := view.Release(); err != nil { // ErrRevoked: the block was reclaimed while read
		fmt.Println(err)
	}

	_, err = tx.LoanBlob(2 << 20)
	fmt.Println(errors.Is(err, dmxp.ErrTooLarge))
	st, _ := seg.BlobPoolStats()
	fmt.Println(st.FreeBlocks())
	// Output:
	// true 1048576 7 true 232
	// true
	// 10
}
