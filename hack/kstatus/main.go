// kstatus prints how sigs.k8s.io/cli-utils' kstatus library (what Flux health checks, helm 4's
// --wait and kpt use) reads Kubernetes objects: one JSON object per line on stdin (kubectl get
// -o json of one object, or the items of a list), one JSON result per object on stdout:
// {"name": ..., "status": "Current|InProgress|Failed|...", "message": ...}.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	data, err := io.ReadAll(bufio.NewReader(os.Stdin))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: reading stdin:", err)
		os.Exit(2)
	}
	var obj map[string]interface{}
	// apimachinery's decoder gives integers as int64, as the kstatus readers expect.
	if err := utiljson.Unmarshal(data, &obj); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: stdin is not a JSON object:", err)
		os.Exit(2)
	}
	objects := []map[string]interface{}{obj}
	if items, ok := obj["items"].([]interface{}); ok {
		objects = objects[:0]
		for _, item := range items {
			if m, ok := item.(map[string]interface{}); ok {
				objects = append(objects, m)
			}
		}
	}
	out := json.NewEncoder(os.Stdout)
	for _, o := range objects {
		u := &unstructured.Unstructured{Object: o}
		res, err := status.Compute(u)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", u.GetName(), err)
			os.Exit(1)
		}
		if err := out.Encode(result{Name: u.GetName(), Status: res.Status.String(), Message: res.Message}); err != nil {
			os.Exit(1)
		}
	}
}
