package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

type fieldsInner struct {
	Limit int    `json:"limit"`
	Note  string `json:"note,omitempty"`
}

type FieldsEmbedded struct {
	Promoted string `json:"promoted"`
	Shadowed int    `json:"shadowed"`
}

type fieldsAmbA struct{ Dup string }
type fieldsAmbB struct{ Dup string }

// fieldsBody has a field of each kind decodeObject walks.
type fieldsBody struct {
	FieldsEmbedded
	fieldsAmbA
	fieldsAmbB
	Shadowed string                 `json:"shadowed"` // hides FieldsEmbedded's
	Name     string                 // no tag: its Go name
	Skip     string                 `json:"-"`
	Dash     string                 `json:"-,"`
	Ptr      *fieldsInner           `json:"ptr"`
	List     []fieldsInner          `json:"list"`
	Arr      [1]fieldsInner         `json:"arr"`
	Labels   map[string]fieldsInner `json:"labels"`
	Any      any                    `json:"any"`
	Raw      json.RawMessage        `json:"raw"`
	At       time.Time              `json:"at"`
	private  string
}

// TestDecodeObjectFields: decodeObject takes a field by its exact name
// only, once per object, at any depth, leaving the keys of maps and of
// values that decode themselves free.
func TestDecodeObjectFields(t *testing.T) {
	var b fieldsBody
	ok := `{"promoted":"p","shadowed":"s","Name":"n","-":"d","ptr":{"limit":1},"list":[{"limit":2,"note":"x"}],` +
		`"arr":[{"limit":3}],"labels":{"Any Key":{"limit":4},"LIMIT":{}},"any":{"FREE":1},"raw":{"RAW":1},"at":"2026-03-10T12:00:00Z"}`
	if err := decodeObject([]byte(ok), &b, ""); err != nil {
		t.Fatalf("a valid body: %v", err)
	}
	if b.Promoted != "p" || b.Shadowed != "s" || b.Name != "n" || b.Dash != "d" || b.Ptr.Limit != 1 || b.List[0].Note != "x" ||
		b.Arr[0].Limit != 3 || b.Labels["Any Key"].Limit != 4 || string(b.Raw) != `{"RAW":1}` || b.At.IsZero() {
		t.Errorf("decoded %+v", b)
	}
	for _, tc := range []struct{ path, body, want string }{
		{"", `{"name":"n"}`, `unknown field "name"`},
		{"", `{"NAME":"n"}`, `unknown field "NAME"`},
		{"", `{"PROMOTED":"p"}`, `unknown field "PROMOTED"`},
		{"", `{"Skip":"x"}`, `unknown field "Skip"`},
		{"", `{"private":"x"}`, `unknown field "private"`},
		{"", `{"FieldsEmbedded":{}}`, `unknown field "FieldsEmbedded"`},
		{"", `{"Dup":"x"}`, `unknown field "Dup"`}, // two embedded structs have it: neither's
		{"", `{"ptr":{"LIMIT":1}}`, `ptr: unknown field "LIMIT"`},
		{"", `{"list":[{"limit":1},{"Limit":2}]}`, `list[1]: unknown field "Limit"`},
		{"", `{"arr":[{"Note":"x"}]}`, `arr[0]: unknown field "Note"`},
		{"", `{"labels":{"a":{"limit":1,"LIMIT":2}}}`, `labels.a: unknown field "LIMIT"`},
		{"", `{"Name":"a","Name":"b"}`, `duplicate field "Name"`},
		{"", `{"labels":{"a":{},"a":{}}}`, `labels: duplicate field "a"`},
		{"", `{"any":{"x":1,"x":2}}`, `any: duplicate field "x"`},
		{"", `{"raw":[{"k":1,"k":2}]}`, `raw[0]: duplicate field "k"`},
		{"", `{"nope":{"k":1,"k":2}}`, `unknown field "nope"`}, // the first refusal is named
		{"rate[0]", `{"NAME":"n"}`, `rate[0]: unknown field "NAME"`},
		{"rate[0]", `{"ptr":{"limit":1,"limit":1}}`, `rate[0].ptr: duplicate field "limit"`},
		// Bodies that are not well formed are named as such first.
		{"", `{"NAME":"n",`, "body: truncated JSON"},
		{"", `{"NAME":"n" "x"}`, "body: invalid JSON at byte"},
		{"", `{"any":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, "body: invalid JSON"},
		// A number no float holds does not stop the walk.
		{"", `{"any":1e400,"NAME":"n"}`, `unknown field "NAME"`},
	} {
		var b fieldsBody
		err := decodeObject([]byte(tc.body), &b, tc.path)
		var e *apiError
		if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != "invalid_request" || !strings.HasPrefix(e.Message, tc.want) {
			t.Errorf("%.60s at %q: got %v, want a 400 starting %q", tc.body, tc.path, err, tc.want)
		}
	}
}

// TestJSONFieldsAgree: every name jsonFields gives, encoding/json
// decodes into that very field.
func TestJSONFieldsAgree(t *testing.T) {
	for name := range jsonFields(reflect.TypeFor[fieldsBody]()) {
		body := `{"` + name + `":null}`
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		var b fieldsBody
		if err := dec.Decode(&b); err != nil {
			t.Errorf("%s: encoding/json refuses %s: %v", name, body, err)
		}
	}
}

// TestDeepBodyCheapToCheck: checking the keys of a body at the size
// bound costs memory in proportion to the body, not to its depth times
// its keys' length (a path string per level per value took 4.6 GB for
// 1 MB of nested objects with long keys).
func TestDeepBodyCheapToCheck(t *testing.T) {
	const depth = 10000
	key := strings.Repeat("k", 90)
	var b strings.Builder
	for range depth {
		b.WriteString(`{"` + key + `":`)
	}
	b.WriteString("1")
	b.WriteString(strings.Repeat("}", depth))
	body := []byte(b.String())
	for _, v := range []any{&map[string]any{}, &struct{ X int }{}} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		checkKeys(body, reflect.TypeOf(v), "")
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
			t.Errorf("checking %d bytes into %T allocated %d MB, want under 64", len(body), v, alloc>>20)
		}
	}
}
