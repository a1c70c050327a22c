package admin

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/gaia-proxy/gaia-proxy/internal/credential"
)

// maxBody bounds a request body.
const maxBody = 1 << 20

// bodyTime bounds the read of a request body: a client that stalls or
// trickles one would otherwise hold its connection and goroutine for as
// long as it likes (the servers bound only the headers' time, so that
// the live stream and long reads are not cut). A variable for tests.
var bodyTime = 10 * time.Second

// apiError is an error answered as JSON {"error": Code, "message":
// Message} with Status. Err, when set, is logged and never sent: clients
// see less than logs do.
type apiError struct {
	Status  int
	Code    string
	Message string
	Err     error
}

func (e *apiError) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *apiError) Unwrap() error { return e.Err }

// badRequest is a 400 invalid_request whose message names the field.
func badRequest(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "invalid_request", Message: fmt.Sprintf(format, args...)}
}

// notFoundError is a 404 not_found.
func notFoundError(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf(format, args...)}
}

// unavailable is a 501 for an endpoint whose dependency is not
// configured.
func unavailable(what string) *apiError {
	return &apiError{Status: http.StatusNotImplemented, Code: "not_configured", Message: what + " is not configured on this admin port"}
}

// internal is a 500 whose cause is logged, not sent.
func internal(what string, err error) *apiError {
	return &apiError{Status: http.StatusInternalServerError, Code: "internal_error", Message: "internal error: " + what + " failed; see the proxy's log", Err: err}
}

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message,omitempty"`
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.Status, errorBody{e.Code, e.Message})
}

// api turns a handler returning an error into an authorized
// http.Handler that refuses cross-site changes (checkWrite): an
// *apiError is answered as it says, any other error as a 500 whose
// detail goes to Logf only.
func (s *Server) api(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return s.requireToken(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e := checkWrite(r); e != nil {
			writeError(w, e)
			return
		}
		err := h(w, r)
		if err == nil {
			return
		}
		var e *apiError
		if !errors.As(err, &e) {
			e = internal(r.Method+" "+r.URL.Path, err)
		}
		if e.Status >= 500 && e.Err != nil {
			s.logf("admin: %s %s: %v", r.Method, r.URL.Path, e)
		}
		writeError(w, e)
	}), false)
}

// readBody reads a request body of at most maxBody bytes within
// bodyTime.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	// A ResponseWriter without deadlines (httptest's recorder) reads
	// without a bound.
	rc := http.NewResponseController(w)
	bounded := rc.SetReadDeadline(time.Now().Add(bodyTime)) == nil
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if bounded && err == nil {
		rc.SetReadDeadline(time.Time{})
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large",
			Message: fmt.Sprintf("the request body is over %d bytes", maxBody)}
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The connection closes after the answer: net/http would
		// otherwise wait for the rest of the body before answering.
		w.Header().Set("Connection", "close")
		return nil, &apiError{Status: http.StatusRequestTimeout, Code: "request_timeout",
			Message: fmt.Sprintf("the request body did not arrive within %v", bodyTime)}
	case err != nil:
		return nil, badRequest("body: could not be read")
	}
	return b, nil
}

// decodeObject decodes data, which must be one JSON object and nothing
// more, into v, refusing unknown fields: names are matched exactly, and
// given once (see checkKeys). Errors are 400s naming the field by path,
// prefixed with path ("rate[0]"; "" for the body).
func decodeObject(data []byte, v any, path string) error {
	name := path
	if name == "" {
		name = "body"
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return badRequest("%s: must be a JSON object, got nothing", name)
	}
	if data[0] != '{' {
		return badRequest("%s: must be a JSON object, got %s", name, jsonKind(data))
	}
	if err := checkKeys(data, reflect.TypeOf(v), path); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			return badRequest("%s: unexpected data after the JSON object", name)
		}
		return nil
	}
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if path != "" {
			field = strings.TrimSuffix(path+"."+field, ".")
		}
		return badRequest("%s: must be %s, got %s", field, typeWord(typeErr.Type), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return badRequest("%s: invalid JSON at byte %d", name, syntaxErr.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("%s: truncated JSON", name)
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if path != "" {
			return badRequest("%s: unknown field %s", path, f)
		}
		return badRequest("unknown field %s", f)
	}
	return badRequest("%s: invalid JSON", name)
}

// maxDepth is the nesting of JSON values that encoding/json refuses
// beyond.
const maxDepth = 10000

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	errTooDeep      = errors.New("json: too deep") // left to the decoder to report
)

// checkKeys refuses, in the JSON value data starts with, which decodes
// into a value of type t, an object key that is not exactly the name of
// a field of the struct it decodes into (encoding/json matches names
// case-insensitively: "SUBJECT" would set subject) and a key its object
// gives twice (encoding/json keeps the last). Keys of maps and of values
// that decode themselves (json.RawMessage, time.Time) may be anything,
// but not twice. Errors are 400s naming the key, prefixed with the path
// of its object as decodeObject's are; JSON that is not well formed is
// left to the decoder, which says where.
func checkKeys(data []byte, t reflect.Type, path string) error {
	w := keyWalker{dec: json.NewDecoder(bytes.NewReader(data)), root: path}
	w.dec.UseNumber() // any number is a token, 1e400 too
	switch err := w.value(t); {
	case err == errRefused && json.Valid(data), err == nil:
		return w.refused
	}
	return nil // not well formed: the decoder's error says where
}

// errRefused stops a walk at the first key refused.
var errRefused = errors.New("json: key refused")

// keyWalker reads a JSON value token by token, checking its object keys
// against the Go type it decodes into.
type keyWalker struct {
	dec     *json.Decoder
	depth   int
	root    string    // the path of the value walked, as decodeObject names it
	path    []pathSeg // from root to the value being walked
	refused error     // the key refused
}

// pathSeg is a step of a path: an object's key, or a list's index. The
// path is spelled out only for a key refused: a deep body must not cost
// a string per level per value.
type pathSeg struct {
	key   string
	index int // when key is ""
}

// value walks the next value, which decodes into t (nil: into anything),
// at w.path. It returns the tokenizer's error, or errRefused at the
// first key refused (kept in w.refused).
func (w *keyWalker) value(t reflect.Type) error {
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return nil // a string, number, boolean or null
	}
	if w.depth++; w.depth > maxDepth {
		return errTooDeep
	}
	defer func() { w.depth-- }()
	t = decodedType(t)
	kind := reflect.Invalid
	if t != nil {
		kind = t.Kind()
	}
	switch delim {
	case '[':
		var elem reflect.Type
		if kind == reflect.Slice || kind == reflect.Array {
			elem = t.Elem()
		}
		for i := 0; w.dec.More(); i++ {
			w.path = append(w.path, pathSeg{index: i})
			err := w.value(elem)
			w.path = w.path[:len(w.path)-1]
			if err != nil {
				return err
			}
		}
	case '{':
		var fields map[string]reflect.Type
		if kind == reflect.Struct {
			fields = jsonFields(t)
		}
		var elem reflect.Type
		if kind == reflect.Map {
			elem = t.Elem()
		}
		seen := map[string]bool{}
		for w.dec.More() {
			tok, err := w.dec.Token()
			if err != nil {
				return err
			}
			key, _ := tok.(string) // the decoder allows only strings here
			vt := elem
			switch {
			case seen[key]:
				return w.refuse("duplicate field %q", key)
			case fields != nil:
				f, ok := fields[key]
				if !ok {
					return w.refuse("unknown field %q", key)
				}
				vt = f
			}
			seen[key] = true
			w.path = append(w.path, pathSeg{key: key})
			err = w.value(vt)
			w.path = w.path[:len(w.path)-1]
			if err != nil {
				return err
			}
		}
	}
	_, err = w.dec.Token() // the closing ] or }
	return err
}

// refuse keeps key as the key refused, in decodeObject's words, naming
// the object it is in by its path ("rate[0]"), and ends the walk.
func (w *keyWalker) refuse(format, key string) error {
	var b strings.Builder
	b.WriteString(w.root)
	for _, p := range w.path {
		if p.key == "" {
			fmt.Fprintf(&b, "[%d]", p.index)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p.key)
	}
	if path := b.String(); path != "" {
		w.refused = badRequest("%s: "+format, path, short(key))
	} else {
		w.refused = badRequest(format, short(key))
	}
	return errRefused
}

// decodedType returns the type encoding/json decodes a JSON object or
// list into for t: t without its pointers, or nil, any JSON, when that
// is an interface or a type that decodes itself.
func decodedType(t reflect.Type) reflect.Type {
	for t != nil {
		if t.Kind() == reflect.Interface || t.Implements(jsonUnmarshaler) || t.Implements(textUnmarshaler) ||
			reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
			return nil
		}
		if t.Kind() != reflect.Pointer {
			return t
		}
		t = t.Elem()
	}
	return nil
}

// jsonFields returns the types of the fields of the struct type t by
// the names encoding/json decodes them from, exactly spelled: a field's
// json tag name, or its Go name, with the fields of embedded structs
// promoted unless a shallower field, or a tagged one as shallow, has the
// name. Tag "-" leaves a field out; a name two fields as shallow share,
// neither tagged, is no field's.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	type field struct {
		typ    reflect.Type
		depth  int
		tagged bool
		twice  bool // another field as shallow has the name, as tagged
	}
	found := map[string]*field{}
	visited := map[reflect.Type]bool{}
	level := []reflect.Type{t}
	for depth := 0; len(level) > 0; depth++ {
		var next []reflect.Type
		for _, st := range level {
			if visited[st] {
				continue
			}
			visited[st] = true
			for i := range st.NumField() {
				sf := st.Field(i)
				ft := sf.Type
				if ft.Name() == "" && ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if sf.Anonymous {
					if !sf.IsExported() && ft.Kind() != reflect.Struct {
						continue
					}
				} else if !sf.IsExported() {
					continue
				}
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				if !validTagName(name) {
					name = ""
				}
				if name == "" && sf.Anonymous && ft.Kind() == reflect.Struct {
					next = append(next, ft) // its fields are promoted
					continue
				}
				tagged := name != ""
				if !tagged {
					name = sf.Name
				}
				switch f := found[name]; {
				case f == nil:
					found[name] = &field{typ: sf.Type, depth: depth, tagged: tagged}
				case f.depth < depth:
					// a shallower field has the name
				case tagged && !f.tagged:
					*f = field{typ: sf.Type, depth: depth, tagged: true}
				case tagged == f.tagged:
					f.twice = true
				}
			}
		}
		level = next
	}
	fields := make(map[string]reflect.Type, len(found))
	for name, f := range found {
		if !f.twice {
			fields[name] = f.typ
		}
	}
	return fields
}

// validTagName reports whether encoding/json takes name, from a json
// tag, as a field's name.
func validTagName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case !unicode.IsLetter(c) && !unicode.IsDigit(c):
			return false
		}
	}
	return true
}

// jsonKind names the kind of the JSON value that starts data.
func jsonKind(data []byte) string {
	switch c := data[0]; {
	case c == '[':
		return "a list"
	case c == '"':
		return "a string"
	case c == 'n':
		return "null"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == '-' || c >= '0' && c <= '9':
		return "a number"
	}
	return "invalid JSON"
}

// typeWord names the JSON a Go type decodes from.
func typeWord(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Pointer:
		return typeWord(t.Elem())
	}
	return "an object"
}

// params reads query parameters, refusing unknown and repeated ones.
type params struct {
	q url.Values
}

// newParams checks that q holds only the named parameters, each once.
func newParams(q url.Values, known ...string) (params, error) {
	for _, name := range slices.Sorted(maps.Keys(q)) {
		if !slices.Contains(known, name) {
			return params{}, badRequest("unknown parameter %q (known: %s)", short(name), strings.Join(known, ", "))
		}
		if len(q[name]) > 1 {
			return params{}, badRequest("%s: given %d times, at most once", name, len(q[name]))
		}
		if !credential.IsText(q.Get(name)) {
			return params{}, badRequest("%s: must be UTF-8 text without control characters", name)
		}
	}
	return params{q}, nil
}

// str returns a parameter, "" when absent.
func (p params) str(name string) string { return p.q.Get(name) }

// integer returns a parameter from lo to hi, def when absent.
func (p params) integer(name string, def, lo, hi int) (int, error) {
	v := p.q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, badRequest("%s: must be an integer from %d to %d, got %q", name, lo, hi, short(v))
	}
	return n, nil
}

// time returns an RFC3339 parameter, def when absent.
func (p params) time(name string, def time.Time) (time.Time, error) {
	v := p.q.Get(name)
	if v == "" {
		return def, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, badRequest("%s: must be RFC3339 (2026-03-08T12:00:00Z), got %q", name, short(v))
	}
	return t.UTC(), nil
}

// oneOf returns a parameter that must be one of allowed, def when
// absent.
func (p params) oneOf(name, def string, allowed ...string) (string, error) {
	v := p.q.Get(name)
	if v == "" {
		return def, nil
	}
	if !slices.Contains(allowed, v) {
		return "", badRequest("%s: must be %s, got %q", name, orList(allowed), short(v))
	}
	return v, nil
}

// orList writes "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// short shortens a value echoed in an error message.
func short(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "..."
}
