package dashboard_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/fwdproxy/fwdproxy/internal/adminui"
	"github.com/fwdproxy/fwdproxy/internal/dashboard"
	"github.com/fwdproxy/fwdproxy/internal/flows"
)

// The admin listener as the proxy and the example server put it together:
// the dashboard and the flow inspector on one mux, next to /metrics and
// the health endpoints, behind the guard.
func Example_adminListener() {
	// The proxy implements Source from its counters.
	src := dashboard.SourceFunc(func() dashboard.Sample {
		return dashboard.Sample{Requests: 42, P50: 3 * time.Millisecond}
	})
	d := dashboard.New(src, dashboard.Options{})
	d.Start()
	ring := flows.NewRing(flows.Options{}) // only when the admin listener is on
	inspector := flows.NewHandler(ring, flows.HandlerOptions{})

	mux := http.NewServeMux()
	d.Register(mux)
	inspector.Register(mux)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	admin := adminui.Guard(mux, adminui.GuardOptions{Token: "s3cret", Public: []string{"/healthz"}})

	srv := httptest.NewUnstartedServer(admin)
	srv.Config.RegisterOnShutdown(d.Close)         // SSE streams and the sampler end
	srv.Config.RegisterOnShutdown(inspector.Close) // on Shutdown
	srv.Start()
	defer srv.Close()
	defer inspector.Close()
	defer d.Close()

	// Per request, the proxy counts the destination and, when the ring
	// records, hands it the finished request's record.
	d.Destination("example.com")
	if ring.Recording() {
		ring.Add(&flows.Flow{Start: time.Now(), Method: "GET", URL: "http://example.com/", Host: "example.com",
			Status: 200, RequestHeader: http.Header{"Authorization": {"Bearer x"}}})
	}

	for _, path := range []string{"/healthz", "/api/stats", "/api/flows"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		fmt.Println(path, resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/api/flows/1", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println("/api/flows/1 with the token", resp.StatusCode)
	// Output:
	// /healthz 200
	// /api/stats 401
	// /api/flows 401
	// /api/flows/1 with the token 200
}
