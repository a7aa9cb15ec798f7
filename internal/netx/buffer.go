package netx

import (
	"io"
	"sync"
)

// CopyBufferSize is the size of the pooled buffers that body and tunnel
// copies use: large enough that a big body moves in few system calls, small
// enough that thousands of concurrent streams stay cheap.
const CopyBufferSize = 32 << 10

// bufferPool hands out copy buffers. Pointers to arrays avoid the
// allocation that storing a slice header in a sync.Pool would cost.
var bufferPool = sync.Pool{New: func() any { return new([CopyBufferSize]byte) }}

// GetBuffer returns a copy buffer from the pool; PutBuffer gives it back.
func GetBuffer() *[CopyBufferSize]byte { return bufferPool.Get().(*[CopyBufferSize]byte) }

// PutBuffer returns a buffer from GetBuffer to the pool.
func PutBuffer(b *[CopyBufferSize]byte) { bufferPool.Put(b) }

// WriterOnly hides a writer's other methods (ReadFrom), so that io.Copy
// through it does not recurse.
type WriterOnly struct{ io.Writer }
