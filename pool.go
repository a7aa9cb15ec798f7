package fwdproxy

import "sync"

// copyBufferSize is the size of the pooled buffers that body and tunnel
// copies use: large enough that a big body moves in few system calls, small
// enough that thousands of concurrent streams stay cheap.
const copyBufferSize = 32 << 10

// bufferPool hands out copy buffers. Pointers to arrays avoid the
// allocation that storing a slice header in a sync.Pool would cost.
var bufferPool = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

func getBuffer() *[copyBufferSize]byte  { return bufferPool.Get().(*[copyBufferSize]byte) }
func putBuffer(b *[copyBufferSize]byte) { bufferPool.Put(b) }
