// Package hartest holds the library's tests that need a JSON-schema
// validator: every HAR the library writes (internal/flows' WriteHAR and
// HARFile, an Admin's /flows.har and AdminOptions.HARFile under real
// traffic) is checked against the HAR 1.2 schema, so that browser dev
// tools and other HAR readers open it. It is a module of its own, so the
// validator stays out of the library's go.mod (a consumer's module graph
// stays small); its replace directive tests the library in this tree. The
// tests of the library itself decode the same HAR as JSON and check its
// content, not its schema.
//
// Schema and Validate are the check; run the tests with
//
//	cd internal/hartest && go test -race ./...
package hartest

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// schemaJSON is HAR 1.2 as a JSON schema (see its $comment).
//
//go:embed har-1.2.schema.json
var schemaJSON []byte

// Schema compiles the HAR 1.2 schema, with formats asserted.
func Schema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	const url = "https://fwdproxy.invalid/har-1.2.schema.json"
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Validate checks b against the HAR 1.2 schema and returns it decoded.
func Validate(t testing.TB, b []byte) map[string]any {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("HAR is not JSON: %v\n%s", err, b)
	}
	if err := Schema(t).Validate(doc); err != nil {
		t.Fatalf("HAR does not validate: %v\n%s", err, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
