"""pika against a cluster: queues declared on one node, published to
(with publisher confirms, as pika's BlockingConnection does them) through
a second, consumed through a third. Arguments: the three nodes' AMQP
ports. Prints one "ok" line per flow; any failure exits non-zero."""
import sys
import time

import pika

PORTS = [int(p) for p in sys.argv[1:4]]


def channel(i):
    c = pika.BlockingConnection(
        pika.ConnectionParameters(host="127.0.0.1", port=PORTS[i], heartbeat=30)
    )
    return c, c.channel()


def flow(queue, arguments):
    # Declared on node 1.
    c1, ch1 = channel(0)
    ch1.queue_declare(queue=queue, durable=True, arguments=arguments)
    c1.close()
    # Published through node 2, each confirmed.
    c2, ch2 = channel(1)
    ch2.confirm_delivery()
    for i in range(20):
        ch2.basic_publish(
            exchange="",
            routing_key=queue,
            body=("%s-%d" % (queue, i)).encode(),
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
            mandatory=True,
        )
    c2.close()
    # Consumed through node 3: a few with basic.get, the rest pushed,
    # acked one by one; then nothing is left.
    c3, ch3 = channel(2)
    got = []
    deadline = time.time() + 20
    while len(got) < 5 and time.time() < deadline:
        m, _, body = ch3.basic_get(queue, auto_ack=False)
        if m is None:
            time.sleep(0.05)
            continue
        ch3.basic_ack(m.delivery_tag)
        got.append(body.decode())
    ch3.basic_qos(prefetch_count=5)

    def cb(ch, method, properties, body):
        got.append(body.decode())
        ch.basic_ack(method.delivery_tag)
        if len(got) == 20:
            ch.stop_consuming()

    ch3.basic_consume(queue=queue, on_message_callback=cb)
    c3.call_later(20, ch3.stop_consuming)
    ch3.start_consuming()
    want = ["%s-%d" % (queue, i) for i in range(20)]
    assert got == want, (queue, got)
    ch3.close()
    ch3 = c3.channel()
    # A passive declare counts nothing left (the acks reached the queue's
    # node before this answer: they travel in order).
    left = ch3.queue_declare(queue=queue, passive=True).method.message_count
    assert left == 0, (queue, left)
    c3.close()
    print("ok %s" % queue)


flow("classic-on-1", {})
flow("quorum-on-1", {"x-queue-type": "quorum"})
