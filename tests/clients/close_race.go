// The Go client (github.com/rabbitmq/amqp091-go) closing one connection
// from several goroutines at once, as applications that share a
// connection do on shutdown. The broker must answer every
// connection.close with close-ok and keep the socket until the client has
// read it: RabbitMQ never makes Close fail with "501 EOF" (the socket gone
// before close-ok). The client's own races (a goroutine writing after
// another shut the socket: "use of closed network connection") happen with
// RabbitMQ too and are not the broker's. A lone Close must return nil.
// Usage: close_race AMQP_URI
package main

import (
	"errors"
	"fmt"
	"os"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	uri := os.Args[1]
	const rounds, closers = 30, 8
	bad := 0
	for round := 0; round < rounds; round++ {
		conn, err := amqp.Dial(uri)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		ch, err := conn.Channel()
		if err != nil {
			fmt.Println("channel:", err)
			os.Exit(1)
		}
		if _, err := ch.QueueDeclare("", false, true, true, false, nil); err != nil {
			fmt.Println("declare:", err)
			os.Exit(1)
		}
		var wg sync.WaitGroup
		errs := make(chan error, closers)
		for i := 0; i < closers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- conn.Close()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			var aerr *amqp.Error
			if errors.As(err, &aerr) && aerr.Code == amqp.FrameError {
				fmt.Printf("round %d: Close: %v\n", round, err)
				bad++
			}
		}
		// And a lone Close on a fresh connection: nil, exactly.
		solo, err := amqp.Dial(uri)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		if err := solo.Close(); err != nil {
			fmt.Printf("round %d: lone Close: %v\n", round, err)
			bad++
		}
	}
	if bad > 0 {
		fmt.Printf("FAIL close_race: %d bad closes\n", bad)
		os.Exit(1)
	}
	fmt.Println("ok close_race")
}
