"""kombu (py-amqp transport) and amqpstorm against a broker: shapes that
failed against warren and pass against RabbitMQ 3.10. Prints "ok NAME" or
"FAIL NAME: why" per scenario. Usage: kombu_compat.py PORT"""

import sys
import traceback

import amqpstorm
from amqp import exceptions as amqp_exceptions
from kombu import Connection, Consumer, Queue

PORT = int(sys.argv[1])


def kombu_delete_consumed_queue():
    """kombu deletes a queue from the channel that consumes it: delete-ok
    must come before the server's basic.cancel, or py-amqp raises
    ConsumerCancelled in the middle of queue.delete."""
    with Connection(f"amqp://guest:guest@127.0.0.1:{PORT}//") as conn:
        ch = conn.channel()
        q = Queue("kombu-delete-consumed", channel=ch, auto_delete=False)
        q.declare()
        got = []
        consumer = Consumer(ch, queues=[q], callbacks=[lambda body, msg: got.append(body)])
        consumer.consume()
        # Must not raise: delete-ok comes first.
        q.delete()
        # The cancel follows; py-amqp surfaces it on the next wait.
        try:
            conn.drain_events(timeout=5)
        except amqp_exceptions.ConsumerCancelled:
            pass
        else:
            raise AssertionError("no basic.cancel after queue.delete-ok")


def amqpstorm_large_message():
    """amqpstorm sends body frames whose payload is exactly frame_max."""
    with amqpstorm.Connection("127.0.0.1", "guest", "guest", port=PORT) as conn:
        with conn.channel() as ch:
            ch.queue.declare("amqpstorm-large")
            ch.confirm_deliveries()
            body = b"z" * (3 * 131072 + 17)
            assert ch.basic.publish(body, "amqpstorm-large")
            msg = ch.basic.get("amqpstorm-large", no_ack=True, to_dict=False)
            assert msg is not None and len(msg.body) == len(body), msg
            ch.queue.delete("amqpstorm-large")


def main():
    failed = False
    for f in (kombu_delete_consumed_queue, amqpstorm_large_message):
        try:
            f()
            print(f"ok {f.__name__}", flush=True)
        except BaseException as e:  # noqa: BLE001 - report, then go on
            failed = True
            print(f"FAIL {f.__name__}: {e!r}", flush=True)
            traceback.print_exc()
    sys.exit(1 if failed else 0)


main()
