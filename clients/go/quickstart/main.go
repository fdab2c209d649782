// Command quickstart is the README's Go example: pull an image and run a command in it to its exit.
//
//	CM_HOST=unix:/run/cm.sock go run ./quickstart 127.0.0.1:5000/library/busybox
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/cm-project/cm/clients/go/cm"
	"github.com/cm-project/cm/clients/go/cmv1"
)

func main() {
	ctx, image := context.Background(), os.Args[1]
	c, err := cm.DialEnv() // $CM_HOST, default unix:/run/cm.sock
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Pull(ctx, image, nil); err != nil { // a channel instead of nil gets the progress
		log.Fatal(err)
	}
	spec := &cmv1.ContainerSpec{Image: image, Command: []string{"echo", "hello from go"}, AutoRemove: true}
	_, exit, err := c.Run(ctx, spec, os.Stdout, os.Stderr)
	fmt.Println("exit", exit.GetExitCode(), err)
}
