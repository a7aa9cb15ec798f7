package adminui

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestSSEFraming(t *testing.T) {
	w := httptest.NewRecorder()
	s, err := StartSSE(w)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Flushed {
		t.Error("StartSSE did not flush")
	}
	s.Event("flow", "7", []byte(`{"a":1}`))
	s.Event("", "", []byte("one\ntwo\r\nthree\rfour"))
	s.Event("evil\ndata: x", "1\n2", []byte(""))
	s.Comment("ping\nno")
	want := "retry: 2000\n\n" +
		"event: flow\nid: 7\ndata: {\"a\":1}\n\n" +
		"data: one\ndata: two\ndata: three\ndata: four\n\n" +
		"event: evil\nid: 1\ndata: \n\n" +
		": ping\n\n"
	if got := w.Body.String(); got != want {
		t.Errorf("stream\n%q\nwant\n%q", got, want)
	}
	h := w.Header()
	if h.Get("Content-Type") != "text/event-stream; charset=utf-8" || h.Get("Cache-Control") != "no-store" || h.Get("X-Accel-Buffering") != "no" {
		t.Errorf("headers %v", h)
	}
	if RetryAfter != 2*time.Second {
		t.Errorf("RetryAfter changed: update the retry line in the test")
	}
}

// TestSSEWriteDeadline checks that a stream outlives the server's
// WriteTimeout.
func TestSSEWriteDeadline(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := StartSSE(w)
		if err != nil {
			return
		}
		for range 3 {
			time.Sleep(60 * time.Millisecond)
			if s.Event("tick", "", []byte("x")) != nil {
				return
			}
		}
	}))
	srv.Config.WriteTimeout = 50 * time.Millisecond
	srv.Start()
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := make([]byte, 4096)
	var got []byte
	for {
		n, err := resp.Body.Read(b)
		got = append(got, b[:n]...)
		if err != nil {
			break
		}
	}
	if want := "retry: 2000\n\n" + "event: tick\ndata: x\n\n" + "event: tick\ndata: x\n\n" + "event: tick\ndata: x\n\n"; string(got) != want {
		t.Errorf("got %q, want three ticks past the write timeout", got)
	}
}
