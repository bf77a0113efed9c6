"""The RabbitMQ tutorial flows (https://www.rabbitmq.com/tutorials), with
pika, against the broker at the port given. Each flow asserts what the
tutorial shows; any failure exits non-zero."""
import sys
import threading
import time
import uuid

import pika

PORT = int(sys.argv[1])


def params():
    return pika.ConnectionParameters(host="127.0.0.1", port=PORT, heartbeat=30)


def drain(ch, q, n, timeout=10.0, auto_ack=True):
    out = []
    deadline = time.time() + timeout
    while len(out) < n and time.time() < deadline:
        m = ch.basic_get(q, auto_ack=auto_ack)
        if m[0] is None:
            time.sleep(0.01)
            continue
        out.append(m[2])
    return out


def hello_world():
    c = pika.BlockingConnection(params())
    ch = c.channel()
    ch.queue_declare(queue="hello")
    ch.basic_publish(exchange="", routing_key="hello", body=b"Hello World!")
    got = []

    def cb(ch, method, properties, body):
        got.append(body)
        ch.stop_consuming()

    ch.basic_consume(queue="hello", on_message_callback=cb, auto_ack=True)
    ch.start_consuming()
    assert got == [b"Hello World!"], got
    c.close()


def work_queues():
    c = pika.BlockingConnection(params())
    ch = c.channel()
    ch.queue_declare(queue="task_queue", durable=True)
    ch.queue_purge("task_queue")
    for i in range(10):
        ch.basic_publish(
            exchange="",
            routing_key="task_queue",
            body=("task %d" % i).encode(),
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )
    # Two workers with prefetch 1 share the work, each acking manually.
    done = {0: [], 1: []}

    def worker(i):
        wc = pika.BlockingConnection(params())
        wch = wc.channel()
        wch.queue_declare(queue="task_queue", durable=True)
        wch.basic_qos(prefetch_count=1)

        def cb(ch, method, properties, body):
            time.sleep(0.01)
            done[i].append(body)
            ch.basic_ack(delivery_tag=method.delivery_tag)
            if len(done[0]) + len(done[1]) >= 10:
                ch.stop_consuming()

        wch.basic_consume(queue="task_queue", on_message_callback=cb)
        deadline = time.time() + 10
        while len(done[0]) + len(done[1]) < 10 and time.time() < deadline:
            wc.process_data_events(0.05)
        wc.close()

    ts = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    all_done = sorted(done[0] + done[1])
    assert all_done == sorted(("task %d" % i).encode() for i in range(10)), all_done
    assert done[0] and done[1], "both workers got work: %r" % done
    q = ch.queue_declare(queue="task_queue", durable=True, passive=True)
    assert q.method.message_count == 0
    c.close()


def publish_subscribe():
    c = pika.BlockingConnection(params())
    ch = c.channel()
    ch.exchange_declare(exchange="logs", exchange_type="fanout")
    qs = []
    for _ in range(2):
        r = ch.queue_declare(queue="", exclusive=True)
        assert r.method.queue.startswith("amq.gen-"), r.method.queue
        ch.queue_bind(exchange="logs", queue=r.method.queue)
        qs.append(r.method.queue)
    ch.basic_publish(exchange="logs", routing_key="", body=b"info: hi")
    for q in qs:
        assert drain(ch, q, 1) == [b"info: hi"]
    c.close()
    # Exclusive queues go with their connection.
    c2 = pika.BlockingConnection(params())
    try:
        c2.channel().queue_declare(queue=qs[0], passive=True)
        raise AssertionError("exclusive queue outlived its connection")
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
    c2.close()


def routing():
    c = pika.BlockingConnection(params())
    ch = c.channel()
    ch.exchange_declare(exchange="direct_logs", exchange_type="direct")
    err = ch.queue_declare(queue="", exclusive=True).method.queue
    allq = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(exchange="direct_logs", queue=err, routing_key="error")
    for sev in ("info", "warning", "error"):
        ch.queue_bind(exchange="direct_logs", queue=allq, routing_key=sev)
    for sev in ("info", "warning", "error", "debug"):
        ch.basic_publish(exchange="direct_logs", routing_key=sev, body=sev.encode())
    assert drain(ch, err, 1) == [b"error"]
    assert drain(ch, allq, 3) == [b"info", b"warning", b"error"]
    time.sleep(0.1)
    assert ch.queue_declare(queue=allq, passive=True).method.message_count == 0
    c.close()


def topics():
    c = pika.BlockingConnection(params())
    ch = c.channel()
    ch.exchange_declare(exchange="topic_logs", exchange_type="topic")
    binds = {"#": [], "kern.*": [], "*.critical": [], "kern.#": []}
    queues = {}
    for key in binds:
        q = ch.queue_declare(queue="", exclusive=True).method.queue
        ch.queue_bind(exchange="topic_logs", queue=q, routing_key=key)
        queues[key] = q
    keys = ["kern.critical", "kern", "a.critical", "kern.x.y", "anonymous.info"]
    for k in keys:
        ch.basic_publish(exchange="topic_logs", routing_key=k, body=k.encode())
    want = {
        "#": keys,
        "kern.*": ["kern.critical"],
        "*.critical": ["kern.critical", "a.critical"],
        "kern.#": ["kern.critical", "kern", "kern.x.y"],
    }
    for key, q in queues.items():
        got = [b.decode() for b in drain(ch, q, len(want[key]))]
        assert got == want[key], (key, got)
    c.close()


def rpc():
    server = pika.BlockingConnection(params())
    sch = server.channel()
    sch.queue_declare(queue="rpc_queue")
    sch.queue_purge("rpc_queue")

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def on_request(ch, method, props, body):
        n = int(body)
        ch.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=str(fib(n)).encode(),
        )
        ch.basic_ack(delivery_tag=method.delivery_tag)

    sch.basic_qos(prefetch_count=1)
    sch.basic_consume(queue="rpc_queue", on_message_callback=on_request)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            server.process_data_events(0.05)

    t = threading.Thread(target=serve)
    t.start()
    try:
        client = pika.BlockingConnection(params())
        cch = client.channel()
        callback_queue = cch.queue_declare(queue="", exclusive=True).method.queue
        answers = {}

        def on_response(ch, method, props, body):
            answers[props.correlation_id] = body

        cch.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=True)
        for n in (1, 10, 20):
            corr = str(uuid.uuid4())
            cch.basic_publish(
                exchange="",
                routing_key="rpc_queue",
                properties=pika.BasicProperties(reply_to=callback_queue, correlation_id=corr),
                body=str(n).encode(),
            )
            deadline = time.time() + 10
            while corr not in answers and time.time() < deadline:
                client.process_data_events(0.05)
            assert answers.get(corr) == str(fib(n)).encode(), (n, answers.get(corr))
        client.close()
    finally:
        stop.set()
        t.join()
        server.close()


def publisher_confirms():
    c = pika.BlockingConnection(params())
    ch = c.channel()
    ch.queue_declare(queue="confirms", durable=True)
    ch.queue_purge("confirms")
    ch.confirm_delivery()
    for i in range(200):
        ch.basic_publish(
            exchange="",
            routing_key="confirms",
            body=str(i).encode(),
            properties=pika.BasicProperties(delivery_mode=2),
        )
    # Unroutable with mandatory: returned, then confirmed.
    try:
        ch.basic_publish(exchange="amq.direct", routing_key="nobody", body=b"x", mandatory=True)
        raise AssertionError("unroutable mandatory publish was not returned")
    except pika.exceptions.UnroutableError:
        pass
    assert ch.queue_declare(queue="confirms", durable=True, passive=True).method.message_count == 200
    c.close()


FLOWS = [hello_world, work_queues, publish_subscribe, routing, topics, rpc, publisher_confirms]

if __name__ == "__main__":
    for f in FLOWS:
        f()
        print("ok", f.__name__)
