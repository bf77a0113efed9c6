"""Side-by-side conformance: each scenario does something a client might
do (often wrong on purpose) and prints what the broker answered. The
expected output (`conformance.expected`) was captured from RabbitMQ 3.10
with this same script; the test runs it against warren and compares.
Generated names are normalized so runs compare."""
import re, sys, time, uuid

import pika
port = int(sys.argv[1])
P = pika.ConnectionParameters(port=port, heartbeat=0)
def conn(): return pika.BlockingConnection(P)
def u(p): return p + uuid.uuid4().hex[:8]
def err(f):
    try:
        r = f(); return "ok %s" % (r,)
    except pika.exceptions.ChannelClosedByBroker as e: return "chan %d %s" % (e.reply_code, e.reply_text)
    except pika.exceptions.ConnectionClosedByBroker as e: return "conn %d %s" % (e.reply_code, e.reply_text)
    except Exception as e: return "exc %s %s" % (type(e).__name__, str(e)[:80])
S = []
def scen(f): S.append(f); return f
@scen
def passive_missing():
    c = conn(); ch = c.channel(); return err(lambda: ch.queue_declare(u('nope'), passive=True))
@scen
def amq_prefix_exchange():
    c = conn(); ch = c.channel(); return err(lambda: ch.exchange_declare('amq.foo', 'direct'))
@scen
def amq_prefix_queue():
    c = conn(); ch = c.channel(); return err(lambda: ch.queue_declare('amq.foo'))
@scen
def bad_exchange_type():
    c = conn(); ch = c.channel(); return err(lambda: ch.exchange_declare(u('x'), 'nosuch'))
@scen
def redeclare_exchange_type():
    c = conn(); ch = c.channel(); x = u('x'); ch.exchange_declare(x, 'direct'); r = err(lambda: ch.exchange_declare(x, 'fanout')); return r
@scen
def redeclare_queue_durable():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); return err(lambda: ch.queue_declare(q, durable=True))
@scen
def redeclare_queue_unknown_arg():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q, arguments={'foo': 1}); r = err(lambda: ch.queue_declare(q, arguments={'foo': 2})); ch.queue_delete(q); return r
@scen
def redeclare_queue_ttl():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q, arguments={'x-message-ttl': 1000}); r = err(lambda: ch.queue_declare(q, arguments={'x-message-ttl': 2000})); return r
@scen
def redeclare_queue_ttl_missing():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q, arguments={'x-message-ttl': 1000}); r = err(lambda: ch.queue_declare(q)); return r
@scen
def ack_unknown_tag():
    c = conn(); ch = c.channel(); ch.basic_ack(42); return err(lambda: ch.queue_declare(u('q')))
@scen
def double_ack():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_publish('', q, b'x'); m = ch.basic_get(q); ch.basic_ack(m[0].delivery_tag); ch.basic_ack(m[0].delivery_tag); return err(lambda: ch.queue_declare(q))
@scen
def multiple_ack_zero():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_publish('', q, b'x'); ch.basic_publish('', q, b'y'); ch.basic_get(q); ch.basic_get(q); ch.basic_ack(0, multiple=True); r = err(lambda: ch.queue_declare(q)); return r
@scen
def dup_consumer_tag():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_consume(q, lambda *a: None, consumer_tag='t'); return err(lambda: ch.basic_consume(q, lambda *a: None, consumer_tag='t'))
@scen
def bind_missing_exchange():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); return err(lambda: ch.queue_bind(q, u('nox')))
@scen
def bind_missing_queue():
    c = conn(); ch = c.channel(); return err(lambda: ch.queue_bind(u('noq'), 'amq.direct'))
@scen
def bind_default_exchange():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); return err(lambda: ch.queue_bind(q, ''))
@scen
def publish_missing_exchange():
    c = conn(); ch = c.channel(); ch.basic_publish(u('nox'), 'k', b'x'); return err(lambda: ch.queue_declare(u('q')))
@scen
def tx_then_confirm():
    c = conn(); ch = c.channel(); ch.tx_select(); return err(lambda: ch.confirm_delivery())
@scen
def qos_prefetch_size():
    c = conn(); ch = c.channel(); return err(lambda: ch.basic_qos(prefetch_size=10))
@scen
def delete_amq_direct():
    c = conn(); ch = c.channel(); return err(lambda: ch.exchange_delete('amq.direct'))
@scen
def delete_default_exchange():
    c = conn(); ch = c.channel(); return err(lambda: ch.exchange_delete(''))
@scen
def delete_missing_exchange():
    c = conn(); ch = c.channel(); return err(lambda: ch.exchange_delete(u('nox')))
@scen
def delete_missing_queue():
    c = conn(); ch = c.channel(); return err(lambda: ch.queue_delete(u('noq')))
@scen
def exclusive_consumer_conflict():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_consume(q, lambda *a: None, exclusive=True); ch2 = c.channel(); return err(lambda: ch2.basic_consume(q, lambda *a: None))
@scen
def exclusive_consumer_when_others():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_consume(q, lambda *a: None); ch2 = c.channel(); return err(lambda: ch2.basic_consume(q, lambda *a: None, exclusive=True))
@scen
def delete_if_unused():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_consume(q, lambda *a: None); ch2 = c.channel(); return err(lambda: ch2.queue_delete(q, if_unused=True))
@scen
def delete_if_empty():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_publish('', q, b'x'); return err(lambda: ch.queue_delete(q, if_empty=True))
@scen
def delete_count():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_publish('', q, b'x'); ch.basic_publish('', q, b'x'); return err(lambda: ch.queue_delete(q).method.message_count)
@scen
def exchange_delete_if_unused():
    c = conn(); ch = c.channel(); x = u('x'); ch.exchange_declare(x, 'direct'); q = u('q'); ch.queue_declare(q); ch.queue_bind(q, x, 'k'); return err(lambda: ch.exchange_delete(x, if_unused=True))
@scen
def exclusive_queue_other_conn():
    c = conn(); ch = c.channel(); q = ch.queue_declare('', exclusive=True).method.queue; c2 = conn(); ch2 = c2.channel(); return err(lambda: ch2.basic_get(q)).replace(q, 'Q')
@scen
def exclusive_queue_redeclare_non_exclusive_same_conn():
    c = conn(); ch = c.channel(); q = ch.queue_declare('', exclusive=True).method.queue; return err(lambda: ch.queue_declare(q)).replace(q,'Q')
@scen
def purge_count():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); [ch.basic_publish('', q, b'x') for _ in range(3)]; return err(lambda: ch.queue_purge(q).method.message_count)
@scen
def mandatory_return():
    c = conn(); ch = c.channel(); got=[]; ch.add_on_return_callback(lambda ch, m, p, b: got.append((m.reply_code, m.reply_text, m.exchange, m.routing_key, b))); ch.confirm_delivery()
    r = err(lambda: ch.basic_publish('amq.direct', 'nobody', b'x', mandatory=True)); return r + str(got)
@scen
def recover_requeue():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_publish('', q, b'1'); ch.basic_publish('', q, b'2'); m1 = ch.basic_get(q); ch.basic_recover(requeue=True); m = ch.basic_get(q); return "%s %s %s" % (m[0].redelivered, m[2], m[0].message_count)
@scen
def reject_requeue_position():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); [ch.basic_publish('', q, str(i).encode()) for i in range(3)]; a = ch.basic_get(q); b = ch.basic_get(q); ch.basic_reject(a[0].delivery_tag, requeue=True); m = ch.basic_get(q); return "%s %s" % (m[2], m[0].redelivered)
@scen
def nack_multiple_no_requeue():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); [ch.basic_publish('', q, str(i).encode()) for i in range(3)]; a = ch.basic_get(q); b = ch.basic_get(q); ch.basic_nack(b[0].delivery_tag, multiple=True, requeue=False); return err(lambda: ch.queue_declare(q, passive=True).method.message_count)
@scen
def consumer_cancel_on_delete():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); cancelled = []; ch.add_on_cancel_callback(lambda f: cancelled.append(f.method.consumer_tag)); ch.basic_consume(q, lambda *a: None, consumer_tag='ct'); ch2 = c.channel(); ch2.queue_delete(q)
    deadline = time.time() + 10
    while not cancelled and time.time() < deadline: c.process_data_events(0.05)
    return str(cancelled)
@scen
def autodelete_queue():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q, auto_delete=True); t = ch.basic_consume(q, lambda *a: None); ch.basic_cancel(t); return err(lambda: ch.queue_declare(q, passive=True))
@scen
def autodelete_exchange():
    c = conn(); ch = c.channel(); x = u('x'); ch.exchange_declare(x, 'direct', auto_delete=True); q = u('q'); ch.queue_declare(q); ch.queue_bind(q, x, 'k'); ch.queue_unbind(q, x, 'k'); return err(lambda: ch.exchange_declare(x, 'direct', passive=True))
@scen
def internal_exchange_publish():
    c = conn(); ch = c.channel(); x = u('x'); ch.exchange_declare(x, 'direct', internal=True); ch.basic_publish(x, 'k', b'x'); return err(lambda: ch.queue_declare(u('q')))
@scen
def flow_false():
    c = conn(); ch = c.channel(); return err(lambda: ch.flow(False))
@scen
def recover_no_requeue():
    c = conn(); ch = c.channel(); return err(lambda: ch.basic_recover(requeue=False))
@scen
def declare_ok_counts():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.confirm_delivery(); ch.basic_publish('', q, b'x'); ch.basic_consume(q, lambda *a: None); m = ch.queue_declare(q, passive=True).method; ch2 = c.channel(); ch2.confirm_delivery(); ch2.basic_publish('',q,b'y'); m2 = ch2.queue_declare(q, passive=True).method; return "%d %d / %d %d" % (m.message_count, m.consumer_count, m2.message_count, m2.consumer_count)
@scen
def get_empty():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); return str(ch.basic_get(q))
@scen
def wrong_password():
    try:
        pika.BlockingConnection(pika.ConnectionParameters(port=port, credentials=pika.PlainCredentials('guest','bad'))); return "connected?!"
    except Exception as e: return type(e).__name__ + " " + str(e)[:100]
@scen
def missing_vhost():
    try:
        pika.BlockingConnection(pika.ConnectionParameters(port=port, virtual_host='nope')); return "connected?!"
    except Exception as e: return type(e).__name__ + " " + str(e)[:100]
@scen
def cancel_unknown():
    c = conn(); ch = c.channel(); return err(lambda: ch.basic_cancel('nope'))
@scen
def e2e_binding():
    c = conn(); ch = c.channel(); a = u('xa'); b = u('xb'); ch.exchange_declare(a, 'fanout'); ch.exchange_declare(b, 'direct'); ch.exchange_bind(b, a); q = u('q'); ch.queue_declare(q); ch.queue_bind(q, b, 'k'); ch.confirm_delivery(); ch.basic_publish(a, 'k', b'v'); ch.basic_publish(a, 'z', b'w'); return err(lambda: ch.queue_declare(q, passive=True).method.message_count)
@scen
def e2e_cycle():
    c = conn(); ch = c.channel(); a = u('xa'); b = u('xb'); ch.exchange_declare(a, 'fanout'); ch.exchange_declare(b, 'fanout'); ch.exchange_bind(b, a); ch.exchange_bind(a, b); q = u('q'); ch.queue_declare(q); ch.queue_bind(q, b); ch.confirm_delivery(); ch.basic_publish(a, 'k', b'v'); return err(lambda: ch.queue_declare(q, passive=True).method.message_count)
@scen
def headers_exchange():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.queue_bind(q, 'amq.headers', arguments={'x-match':'any','a':1,'b':'x'}); ch.confirm_delivery(); ch.basic_publish('amq.headers','',b'1', pika.BasicProperties(headers={'a':1})); ch.basic_publish('amq.headers','',b'2', pika.BasicProperties(headers={'b':'y'})); return err(lambda: ch.queue_declare(q, passive=True).method.message_count)
@scen
def bad_xmatch():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); return err(lambda: ch.queue_bind(q, 'amq.headers', arguments={'x-match':'foo'}))
@scen
def bad_ttl_arg():
    c = conn(); ch = c.channel(); return err(lambda: ch.queue_declare(u('q'), arguments={'x-message-ttl': -1}))
@scen
def bad_ttl_type():
    c = conn(); ch = c.channel(); return err(lambda: ch.queue_declare(u('q'), arguments={'x-message-ttl': 'abc'}))
@scen
def unroutable_confirm():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); return err(lambda: ch.basic_publish('amq.direct', 'nowhere', b'x'))
@scen
def props_roundtrip():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q)
    p = pika.BasicProperties(content_type='t/p', content_encoding='gz', headers={'a': 1, 'b': [1, 'x', {'n': 2}], 'e': True}, delivery_mode=2, priority=3, correlation_id='c', reply_to='r', expiration='60000', message_id='m', timestamp=1700000000, type='ty', user_id='guest', app_id='ap', cluster_id='cl')
    ch.basic_publish('', q, b'body', p); m = ch.basic_get(q, auto_ack=True); return str(m[1])
@scen
def user_id_mismatch():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_publish('', q, b'x', pika.BasicProperties(user_id='bob')); return err(lambda: ch.queue_declare(q, passive=True))

def count_deliveries(c, ch, seconds=0.5):
    got = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        c.process_data_events(0.05)
    return got

@scen
def per_consumer_prefetch():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q = u('q'); ch.queue_declare(q)
    for i in range(10): ch.basic_publish('', q, str(i).encode())
    ch.basic_qos(prefetch_count=3); got = []
    ch.basic_consume(q, lambda ch_, m, p, b: got.append(m.delivery_tag))
    deadline = time.time() + 1.0
    while time.time() < deadline: c.process_data_events(0.05)
    n1 = len(got); ch.basic_ack(got[-1], multiple=True)
    deadline = time.time() + 1.0
    while time.time() < deadline: c.process_data_events(0.05)
    return "%d %d" % (n1, len(got))
@scen
def global_prefetch_across_queues():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); qa = u('q'); qb = u('q'); ch.queue_declare(qa); ch.queue_declare(qb)
    for i in range(5): ch.basic_publish('', qa, b'a'); ch.basic_publish('', qb, b'b')
    ch.basic_qos(prefetch_count=3, global_qos=True); got = []
    ch.basic_consume(qa, lambda ch_, m, p, b: got.append((m.delivery_tag, b)))
    ch.basic_consume(qb, lambda ch_, m, p, b: got.append((m.delivery_tag, b)))
    deadline = time.time() + 1.0
    while time.time() < deadline: c.process_data_events(0.05)
    n1 = len(got); ch.basic_ack(got[0][0])
    deadline = time.time() + 1.0
    while time.time() < deadline: c.process_data_events(0.05)
    return "%d %d" % (n1, len(got))
@scen
def tx_publish_rollback_commit():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.tx_select()
    ch.basic_publish('', q, b'rolled back'); ch.tx_rollback()
    ch.basic_publish('', q, b'committed'); ch.tx_commit()
    m = ch.basic_get(q, auto_ack=True); n = ch.queue_declare(q, passive=True).method.message_count
    return "%s %d" % (m[2], n)
@scen
def tx_ack_rollback():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_publish('', q, b'x'); ch.tx_select()
    m = ch.basic_get(q); ch.basic_ack(m[0].delivery_tag); ch.tx_rollback(); ch.close()
    ch2 = c.channel(); m2 = ch2.basic_get(q, auto_ack=True); return "%s %s" % (m2[2], m2[0].redelivered)
@scen
def tx_ack_commit():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_publish('', q, b'x'); ch.tx_select()
    m = ch.basic_get(q); ch.basic_ack(m[0].delivery_tag); ch.tx_commit(); ch.close()
    ch2 = c.channel(); return str(ch2.basic_get(q, auto_ack=True))
@scen
def large_and_empty_bodies():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q = u('q'); ch.queue_declare(q)
    big = bytes(range(256)) * 4096 + b'tail'
    ch.basic_publish('', q, big); ch.basic_publish('', q, b'')
    a = ch.basic_get(q, auto_ack=True); b = ch.basic_get(q, auto_ack=True)
    return "%s %d %s" % (a[2] == big, len(a[2]), b[2])
@scen
def fifo_requeue_and_redelivered():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q = u('q'); ch.queue_declare(q)
    for i in range(6): ch.basic_publish('', q, str(i).encode())
    ms = [ch.basic_get(q) for _ in range(4)]
    ch.basic_nack(ms[3][0].delivery_tag, requeue=True); ch.basic_reject(ms[1][0].delivery_tag, requeue=True)
    out = []
    while True:
        m = ch.basic_get(q, auto_ack=True)
        if m[0] is None: break
        out.append("%s%s" % (m[2].decode(), "r" if m[0].redelivered else ""))
    return " ".join(out)
@scen
def round_robin_two_consumers():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q = u('q'); ch.queue_declare(q); got = []
    ch.basic_consume(q, lambda ch_, m, p, b: got.append(('A', b)), auto_ack=True)
    ch2 = c.channel(); ch2.basic_consume(q, lambda ch_, m, p, b: got.append(('B', b)), auto_ack=True)
    for i in range(6): ch.basic_publish('', q, str(i).encode())
    deadline = time.time() + 1.0
    while time.time() < deadline and len(got) < 6: c.process_data_events(0.05)
    return " ".join(a + b.decode() for a, b in sorted(got, key=lambda x: x[1]))
@scen
def channel_close_requeues():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q = u('q'); ch.queue_declare(q)
    for i in range(3): ch.basic_publish('', q, str(i).encode())
    ch2 = c.channel(); ms = [ch2.basic_get(q) for _ in range(2)]; ch2.close()
    return " ".join("%s%s" % (m[2].decode(), "r" if m[0].redelivered else "") for m in [ch.basic_get(q, auto_ack=True) for _ in range(3)])

def xdeath(props):
    h = (props.headers or {})
    out = []
    for d in h.get('x-death', []):
        d = dict(d); d.pop('time', None)
        d['queue'] = re.sub(r"[a-z]+[0-9a-f]{8}", "N", d.get('queue', ''))
        d['exchange'] = re.sub(r"[a-z]+[0-9a-f]{8}", "N", d.get('exchange', ''))
        d['routing-keys'] = [re.sub(r"[a-z]+[0-9a-f]{8}", "N", k) for k in d.get('routing-keys', [])]
        out.append(sorted(d.items()))
    firsts = sorted((k, re.sub(r"[a-z]+[0-9a-f]{8}", "N", str(v))) for k, v in h.items() if k.startswith('x-first-death'))
    return "%s %s" % (out, firsts)

def wait_get(ch, q, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = ch.basic_get(q, auto_ack=True)
        if m[0] is not None: return m
        time.sleep(0.02)
    return (None, None, None)

def dlq_pair(ch, **qargs):
    dlx = u('dlx'); dlq = u('dlq'); q = u('q')
    ch.exchange_declare(dlx, 'fanout'); ch.queue_declare(dlq); ch.queue_bind(dlq, dlx)
    a = {'x-dead-letter-exchange': dlx}; a.update(qargs)
    ch.queue_declare(q, arguments=a)
    return q, dlq

@scen
def ttl_expiry_dead_letters():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q, dlq = dlq_pair(ch, **{'x-message-ttl': 100})
    ch.basic_publish('', q, b'expiring')
    m = wait_get(ch, dlq)
    return "%s %s %s %s" % (m[2], m[0].exchange.startswith('dlx'), m[0].routing_key == q, xdeath(m[1]))
@scen
def per_message_ttl():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q, dlq = dlq_pair(ch)
    ch.basic_publish('', q, b'short', pika.BasicProperties(expiration='50'))
    ch.basic_publish('', q, b'long', pika.BasicProperties(expiration='60000'))
    m = wait_get(ch, dlq)
    left = ch.queue_declare(q, passive=True).method.message_count
    return "%s %s left=%d" % (m[2], xdeath(m[1]), left)
@scen
def invalid_expiration():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q); ch.basic_publish('', q, b'x', pika.BasicProperties(expiration='abc')); return err(lambda: ch.queue_declare(q, passive=True))
@scen
def ttl_zero():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q = u('q'); ch.queue_declare(q, arguments={'x-message-ttl': 0})
    ch.basic_publish('', q, b'nobody'); time.sleep(0.2)
    n0 = ch.queue_declare(q, passive=True).method.message_count
    got = []; ch.basic_consume(q, lambda c_, m, p, b: got.append(b), auto_ack=True)
    ch.basic_publish('', q, b'someone')
    deadline = time.time() + 2
    while not got and time.time() < deadline: c.process_data_events(0.05)
    return "%d %s" % (n0, got)
@scen
def reject_dead_letters_with_routing_key():
    c = conn(); ch = c.channel(); ch.confirm_delivery()
    dlx = u('dlx'); dlq = u('dlq'); q = u('q')
    ch.exchange_declare(dlx, 'direct'); ch.queue_declare(dlq); ch.queue_bind(dlq, dlx, 'dead')
    ch.queue_declare(q, arguments={'x-dead-letter-exchange': dlx, 'x-dead-letter-routing-key': 'dead'})
    ch.basic_publish('', q, b'bad')
    m = ch.basic_get(q); ch.basic_reject(m[0].delivery_tag, requeue=False)
    d = wait_get(ch, dlq)
    return "%s rk=%s %s" % (d[2], d[0].routing_key, xdeath(d[1]))
@scen
def dead_letter_count_increments():
    c = conn(); ch = c.channel(); ch.confirm_delivery()
    dlx = u('dlx'); q = u('q')
    ch.exchange_declare(dlx, 'fanout'); ch.queue_declare(q, arguments={'x-dead-letter-exchange': dlx}); ch.queue_bind(q, dlx)
    ch.basic_publish('', q, b'retry')
    for i in range(3):
        m = None
        deadline = time.time() + 5
        while time.time() < deadline:
            m = ch.basic_get(q)
            if m[0] is not None: break
            time.sleep(0.02)
        ch.basic_reject(m[0].delivery_tag, requeue=False)
    m = wait_get(ch, q)
    return "%s %s" % (m[2], xdeath(m[1]))
@scen
def dead_letter_cycle_dropped():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q = u('q')
    ch.queue_declare(q, arguments={'x-message-ttl': 50, 'x-dead-letter-exchange': ''})
    ch.basic_publish('', q, b'loop'); time.sleep(0.8)
    return "left=%d" % ch.queue_declare(q, passive=True).method.message_count
@scen
def max_length_drop_head_dead_letters():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q, dlq = dlq_pair(ch, **{'x-max-length': 2})
    for i in range(4): ch.basic_publish('', q, str(i).encode())
    kept = [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)]
    dead = [wait_get(ch, dlq) for _ in range(2)]
    return "%s %s %s" % (kept, [d[2] for d in dead], xdeath(dead[0][1]))
@scen
def max_length_bytes():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q = u('q'); ch.queue_declare(q, arguments={'x-max-length-bytes': 10})
    for b in [b'aaaa', b'bbbb', b'cccc']: ch.basic_publish('', q, b)
    return str([ch.basic_get(q, auto_ack=True)[2] for _ in range(3)])
@scen
def reject_publish_nacks():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q = u('q'); ch.queue_declare(q, arguments={'x-max-length': 1, 'x-overflow': 'reject-publish'})
    ch.basic_publish('', q, b'1')
    r = err(lambda: ch.basic_publish('', q, b'2'))
    return "%s n=%d" % (r, ch.queue_declare(q, passive=True).method.message_count)
@scen
def reject_publish_dlx():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q, dlq = dlq_pair(ch, **{'x-max-length': 1, 'x-overflow': 'reject-publish-dlx'})
    ch.basic_publish('', q, b'1')
    r = err(lambda: ch.basic_publish('', q, b'2'))
    d = wait_get(ch, dlq)
    return "%s %s %s" % (r, d[2], xdeath(d[1]))
@scen
def priority_queue():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q = u('q'); ch.queue_declare(q, arguments={'x-max-priority': 5})
    for i, p in enumerate([1, 5, 0, 9, 5]): ch.basic_publish('', q, str(i).encode(), pika.BasicProperties(priority=p))
    return str([ch.basic_get(q, auto_ack=True)[2] for _ in range(5)])
@scen
def alternate_exchange():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); ae = u('ae'); x = u('x'); aq = u('q')
    ch.exchange_declare(ae, 'fanout'); ch.queue_declare(aq); ch.queue_bind(aq, ae)
    ch.exchange_declare(x, 'direct', arguments={'alternate-exchange': ae})
    r = err(lambda: ch.basic_publish(x, 'nowhere', b'alt', mandatory=True))
    m = wait_get(ch, aq)
    return "%s %s %s" % (r, m[2], m[0].exchange == x)
@scen
def single_active_consumer():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q = u('q'); ch.queue_declare(q, arguments={'x-single-active-consumer': True})
    got = []
    ch.basic_consume(q, lambda c_, m, p, b: got.append(('A', b)), auto_ack=True, consumer_tag='A')
    ch2 = c.channel(); ch2.basic_consume(q, lambda c_, m, p, b: got.append(('B', b)), auto_ack=True, consumer_tag='B')
    for i in range(3): ch.basic_publish('', q, str(i).encode())
    deadline = time.time() + 2
    while len(got) < 3 and time.time() < deadline: c.process_data_events(0.05)
    ch.basic_cancel('A')
    for i in range(3, 5): ch.basic_publish('', q, str(i).encode())
    deadline = time.time() + 2
    while len(got) < 5 and time.time() < deadline: c.process_data_events(0.05)
    return str(got)
@scen
def consumer_priority():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q = u('q'); ch.queue_declare(q)
    got = []
    ch.basic_qos(prefetch_count=2)
    ch.basic_consume(q, lambda c_, m, p, b: got.append(('low', b)), consumer_tag='low', arguments={'x-priority': 1})
    ch2 = c.channel(); ch2.basic_qos(prefetch_count=2)
    ch2.basic_consume(q, lambda c_, m, p, b: got.append(('high', b)), consumer_tag='high', arguments={'x-priority': 10})
    for i in range(3): ch.basic_publish('', q, str(i).encode())
    deadline = time.time() + 2
    while len(got) < 3 and time.time() < deadline: c.process_data_events(0.05)
    return str(sorted(got, key=lambda x: x[1]))
@scen
def queue_expires():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q, arguments={'x-expires': 200}); time.sleep(1.0)
    return err(lambda: ch.queue_declare(q, passive=True))
@scen
def cc_and_bcc():
    c = conn(); ch = c.channel(); ch.confirm_delivery(); q1 = u('q'); q2 = u('q'); q3 = u('q')
    for q in (q1, q2, q3): ch.queue_declare(q); ch.queue_bind(q, 'amq.direct', q)
    ch.basic_publish('amq.direct', q1, b'hi', pika.BasicProperties(headers={'CC': [q2], 'BCC': [q3]}))
    ms = [wait_get(ch, q) for q in (q1, q2, q3)]
    return str([(m[2], sorted((m[1].headers or {}).keys())) for m in ms])

@scen
def reply_to_consume_with_ack():
    c = conn(); ch = c.channel(); return err(lambda: ch.basic_consume('amq.rabbitmq.reply-to', lambda *a: None, auto_ack=False))
@scen
def reply_to_consume_twice():
    c = conn(); ch = c.channel(); ch.basic_consume('amq.rabbitmq.reply-to', lambda *a: None, auto_ack=True)
    return err(lambda: ch.basic_consume('amq.rabbitmq.reply-to', lambda *a: None, auto_ack=True))
@scen
def reply_to_without_consumer():
    c = conn(); ch = c.channel(); q = u('q'); ch.queue_declare(q)
    ch.basic_publish('', q, b'req', pika.BasicProperties(reply_to='amq.rabbitmq.reply-to'))
    return err(lambda: ch.queue_declare(q, passive=True))
@scen
def reply_to_on_another_channel():
    c = conn(); ch = c.channel(); ch.basic_consume('amq.rabbitmq.reply-to', lambda *a: None, auto_ack=True)
    ch2 = c.channel(); q = u('q'); ch2.queue_declare(q)
    ch2.basic_publish('', q, b'req', pika.BasicProperties(reply_to='amq.rabbitmq.reply-to'))
    return err(lambda: ch2.queue_declare(q, passive=True))
@scen
def reply_to_declare_pseudo_queue():
    c = conn(); ch = c.channel(); return err(lambda: ch.queue_declare('amq.rabbitmq.reply-to', passive=True).method.consumer_count)
@scen
def reply_to_get_pseudo_queue():
    c = conn(); ch = c.channel(); return err(lambda: ch.basic_get('amq.rabbitmq.reply-to', auto_ack=True))
@scen
def reply_to_round_trip():
    c = conn(); ch = c.channel(); got = []
    tag = ch.basic_consume('amq.rabbitmq.reply-to', lambda c_, m, p, b: got.append((m.consumer_tag == tag, m.delivery_tag, m.exchange, m.routing_key == rt, m.redelivered, p.correlation_id, b)), auto_ack=True)
    s = conn(); sch = s.channel(); q = u('q'); sch.queue_declare(q)
    ch.basic_publish('', q, b'req', pika.BasicProperties(reply_to='amq.rabbitmq.reply-to', correlation_id='c1'))
    m, p, b = wait_get(sch, q)
    rt = p.reply_to
    named = rt.startswith('amq.rabbitmq.reply-to.') and len(rt) > 30
    live = sch.queue_declare(rt, passive=True).method.consumer_count
    sch.confirm_delivery()
    sch.basic_publish('', rt, b'reply', pika.BasicProperties(correlation_id=p.correlation_id))
    deadline = time.time() + 2
    while not got and time.time() < deadline: c.process_data_events(0.05)
    ch.basic_cancel(tag)
    sch.basic_publish('', rt, b'after cancel')
    for _ in range(5): c.process_data_events(0.05)
    gone = err(lambda: sch.queue_declare(rt, passive=True))
    return str((named, live, got, gone.replace(rt, 'RT')))
@scen
def reply_to_unknown_name():
    c = conn(); ch = c.channel(); ch.basic_publish('', 'amq.rabbitmq.reply-to.garbage', b'x')
    return err(lambda: ch.queue_declare('amq.rabbitmq.reply-to.garbage', passive=True))
@scen
def reply_to_in_transaction():
    c = conn(); ch = c.channel(); got = []
    ch.basic_consume('amq.rabbitmq.reply-to', lambda c_, m, p, b: got.append(b), auto_ack=True)
    q = u('q'); ch.queue_declare(q); ch.tx_select()
    ch.basic_publish('', q, b'req', pika.BasicProperties(reply_to='amq.rabbitmq.reply-to'))
    ch.tx_commit()
    m, p, b = wait_get(ch, q)
    ch.basic_publish('', p.reply_to, b'reply'); ch.tx_commit()
    deadline = time.time() + 2
    while not got and time.time() < deadline: c.process_data_events(0.05)
    return str(got)

only = sys.argv[2:] 
for f in S:
    if only and f.__name__ not in only: continue
    try: r = f()
    except Exception as e: r = "EXC " + type(e).__name__ + " " + str(e)[:100]
    r = re.sub(r"'[a-z]+[0-9a-f]{8}'", "'N'", r)
    r = re.sub(r"amq\.gen-[A-Za-z0-9_-]+", "GEN", r)
    r = re.sub(r"amq\.ctag-[A-Za-z0-9_-]+", "CTAG", r)
    r = re.sub(r"queue=[a-z]+[0-9a-f]{8}", "queue=N", r)
    print("%-45s %s" % (f.__name__, r))
