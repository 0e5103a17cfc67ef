// Command kstatus prints the kstatus verdict of one Kubernetes object, computed by
// sigs.k8s.io/cli-utils/pkg/kstatus/status: the library Flux, kpt and cli-utils' own
// appliers wait on. The tests feed it objects read from the real apiserver, so "what
// does a GitOps tool think of this TracerouteProbe" is answered by the real code.
//
//	kstatus < object.json
//	{"status":"InProgress","message":"...","conditions":[...]}
//
// Exit 0 with a verdict; exit 2 when the input is not one JSON object or kstatus
// itself reports an error.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status     string             `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions"`
}

func run(in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	// UnmarshalJSON keeps integers int64, as kstatus's NestedInt64 lookups expect
	// (a plain json.Unmarshal would turn observedGeneration into a float64).
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		return fmt.Errorf("stdin is not a Kubernetes object: %w", err)
	}
	result, err := status.Compute(obj)
	if err != nil {
		return fmt.Errorf("kstatus: %w", err)
	}
	conditions := result.Conditions
	if conditions == nil {
		conditions = []status.Condition{}
	}
	return json.NewEncoder(out).Encode(verdict{
		Status:     result.Status.String(),
		Message:    result.Message,
		Conditions: conditions,
	})
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
