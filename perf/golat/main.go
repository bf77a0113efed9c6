// A latency driver on the RabbitMQ Go client (github.com/rabbitmq/amqp091-go,
// Debian's golang-github-rabbitmq-amqp091-go-dev), for perf/clients: the
// same measurements as examples/realclient.rs, through a second client
// whose runtime wakes differently from lapin's (goroutines on a few
// threads that spin before they sleep, where lapin hands each frame
// between its I/O thread and the application's).
//
//	go run perf/golat/main.go -uri URI -rate 1000 -time 20
//	go run perf/golat/main.go -uri URI -rpc -clients 4 -time 20
//
// Latency: 1 producer publishing at -rate msg/s to a fresh queue, 1
// consumer acking each delivery (or every -ack-every), publish→deliver
// time from a timestamp in the body. RPC: -clients clients, each with an
// exclusive reply queue and one request outstanding, 1 server replying;
// request→reply time. Prints one JSON line in realclient's shape.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

type stats struct {
	measuring atomic.Bool
	published atomic.Uint64
	delivered atomic.Uint64
	mu        sync.Mutex
	lat       []time.Duration
}

func (s *stats) record(sent time.Time) {
	if !s.measuring.Load() {
		return
	}
	d := time.Since(sent)
	s.delivered.Add(1)
	s.mu.Lock()
	s.lat = append(s.lat, d)
	s.mu.Unlock()
}

func must(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(1)
	}
}

// stopping: an error is the end of the run when the run is stopping (the
// connections close under the goroutines that still answer), else fatal.
func stopping(stop <-chan struct{}, err error, what string) {
	select {
	case <-stop:
	default:
		must(err, what)
	}
}

func channel(uri string) (*amqp.Connection, *amqp.Channel) {
	conn, err := amqp.Dial(uri)
	must(err, "dial")
	ch, err := conn.Channel()
	must(err, "channel")
	return conn, ch
}

func stamp(t time.Time) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, uint64(t.UnixNano()))
	return b
}

func unstamp(b []byte) time.Time {
	if len(b) < 8 {
		return time.Now()
	}
	return time.Unix(0, int64(binary.LittleEndian.Uint64(b)))
}

// latency: one producer at a fixed rate, one consumer acking.
func latency(uri, queue string, rate int, ackEvery uint64, prefetch int, s *stats, stop <-chan struct{}) {
	pc, pch := channel(uri)
	defer pc.Close()
	_, err := pch.QueueDeclare(queue, false, true, false, false, nil)
	must(err, "queue.declare")
	cc, cch := channel(uri)
	defer cc.Close()
	must(cch.Qos(prefetch, 0, false), "basic.qos")
	deliveries, err := cch.Consume(queue, "", false, false, false, false, nil)
	must(err, "basic.consume")
	go func() {
		var n uint64
		for d := range deliveries {
			s.record(unstamp(d.Body))
			n++
			if n%ackEvery == 0 {
				if err := d.Ack(true); err != nil {
					stopping(stop, err, "basic.ack")
					return
				}
			}
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			must(pch.Publish("", queue, false, false, amqp.Publishing{Body: stamp(time.Now())}), "basic.publish")
			if s.measuring.Load() {
				s.published.Add(1)
			}
		}
	}
}

// rpc: a server replying to each request, clients with one request out.
func rpc(uri, queue string, clients int, s *stats, stop <-chan struct{}) {
	sc, sch := channel(uri)
	defer sc.Close()
	_, err := sch.QueueDeclare(queue, false, true, false, false, nil)
	must(err, "queue.declare")
	must(sch.Qos(100, 0, false), "basic.qos")
	reqs, err := sch.Consume(queue, "", false, false, false, false, nil)
	must(err, "basic.consume")
	go func() {
		for d := range reqs {
			err := sch.Publish("", d.ReplyTo, false, false, amqp.Publishing{
				CorrelationId: d.CorrelationId, Body: d.Body})
			if err == nil {
				err = d.Ack(false)
			}
			if err != nil {
				stopping(stop, err, "reply")
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, ch := channel(uri)
			defer c.Close()
			q, err := ch.QueueDeclare("", false, true, true, false, nil)
			must(err, "reply queue")
			replies, err := ch.Consume(q.Name, "", true, true, false, false, nil)
			must(err, "basic.consume")
			for id := 0; ; id++ {
				select {
				case <-stop:
					return
				default:
				}
				corr := strconv.Itoa(id)
				sent := time.Now()
				must(ch.Publish("", queue, false, false, amqp.Publishing{
					CorrelationId: corr, ReplyTo: q.Name, Body: stamp(sent)}), "request")
				if s.measuring.Load() {
					s.published.Add(1)
				}
				for r := range replies {
					if r.CorrelationId == corr {
						s.record(sent)
						break
					}
				}
			}
		}()
	}
	<-stop
	wg.Wait()
}

func pct(sorted []time.Duration, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i].Microseconds()
}

func main() {
	uri := flag.String("uri", "amqp://guest:guest@127.0.0.1:5672/%2f", "broker URI")
	secs := flag.Int("time", 10, "measured seconds")
	warm := flag.Int("warmup", 2, "seconds before measuring")
	rate := flag.Int("rate", 1000, "messages per second (latency)")
	ackEvery := flag.Uint64("ack-every", 1, "ack every N deliveries, multiple (latency)")
	prefetch := flag.Int("prefetch", 1000, "consumer prefetch (latency)")
	isRPC := flag.Bool("rpc", false, "request/reply instead of publish→deliver")
	clients := flag.Int("clients", 4, "RPC clients")
	prefix := flag.String("prefix", "golat", "queue name prefix")
	flag.Parse()
	if *ackEvery == 0 {
		*ackEvery = 1
	}
	s := &stats{}
	stop := make(chan struct{})
	done := make(chan struct{})
	queue := *prefix + "-q"
	go func() {
		if *isRPC {
			rpc(*uri, queue, *clients, s, stop)
		} else {
			latency(*uri, queue, *rate, *ackEvery, *prefetch, s, stop)
		}
		close(done)
	}()
	time.Sleep(time.Duration(*warm) * time.Second)
	s.measuring.Store(true)
	t0 := time.Now()
	time.Sleep(time.Duration(*secs) * time.Second)
	s.measuring.Store(false)
	measured := time.Since(t0).Seconds()
	close(stop)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	s.mu.Lock()
	lat := append([]time.Duration(nil), s.lat...)
	s.mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pub, del := s.published.Load(), s.delivered.Load()
	out := map[string]interface{}{
		"seconds":      measured,
		"published":    pub,
		"delivered":    del,
		"publish_rate": float64(pub) / measured,
		"deliver_rate": float64(del) / measured,
		"latency_us": map[string]int64{
			"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "p999": pct(lat, 0.999),
			"max": pct(lat, 1.0),
		},
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
