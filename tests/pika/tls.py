"""pika over AMQPS (password and EXTERNAL logins) and the management API
over HTTPS, against warren. Args: AMQPS port, HTTPS management port, the
directory with the test's certificates (ca.pem, alice.pem/.key)."""
import base64
import json
import os
import ssl
import sys
import urllib.request

import pika

amqps, https, certs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ca = os.path.join(certs, "ca.pem")


def context(client=None):
    ctx = ssl.create_default_context(cafile=ca)
    if client:
        ctx.load_cert_chain(os.path.join(certs, client + ".pem"), os.path.join(certs, client + ".key"))
    return ctx


def params(credentials, client=None):
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=amqps,
        credentials=credentials,
        ssl_options=pika.SSLOptions(context(client), "localhost"),
        connection_attempts=1,
    )


conn = pika.BlockingConnection(params(pika.PlainCredentials("guest", "guest")))
ch = conn.channel()
ch.queue_declare("pika-tls")
ch.basic_publish("", "pika-tls", b"x" * 300000)
ch.basic_publish("", "pika-tls", b"small")
bodies = []
while len(bodies) < 2:
    m, _, body = ch.basic_get("pika-tls", auto_ack=True)
    if m:
        bodies.append(body)
assert bodies == [b"x" * 300000, b"small"], [len(b) for b in bodies]
print("ok plain-login over tls")

alice = pika.BlockingConnection(params(pika.credentials.ExternalCredentials(), "alice"))
ach = alice.channel()
ach.queue_declare("alices")
ach.confirm_delivery()
ach.basic_publish("", "alices", b"hello")
m, _, body = ach.basic_get("alices", auto_ack=True)
assert body == b"hello", body
print("ok external as alice")

try:
    pika.BlockingConnection(params(pika.credentials.ExternalCredentials()))
    print("external without a certificate was accepted")
except pika.exceptions.ProbableAuthenticationError as e:
    print("ok external refused without a certificate")
except pika.exceptions.AMQPConnectionError as e:
    # pika reports a login refusal as ProbableAuthenticationError or,
    # depending on when the socket closes, as a connection error.
    print("ok external refused without a certificate")


def get(path, tls=True):
    req = urllib.request.Request("https://localhost:%d%s" % (https, path))
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, context=context(), timeout=30) as r:
        return json.loads(r.read())


overview = get("/api/overview")
protocols = [l["protocol"] for l in overview["listeners"]]
print("ok https overview listeners " + " ".join(protocols))

conns = [c for c in get("/api/connections") if c["user"] == "alice"]
assert len(conns) == 1, conns
c = conns[0]
print("ok https connections ssl=%s auth=%s subject=%s" % (c["ssl"], c["auth_mechanism"], c["peer_cert_subject"]))

http_port = [l["port"] for l in overview["listeners"] if l["protocol"] == "http"][0]
req = urllib.request.Request("http://127.0.0.1:%d/api/overview" % http_port)
req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
with urllib.request.urlopen(req, timeout=30) as r:
    assert json.loads(r.read())["listeners"]
print("ok http still served")
alice.close()
conn.close()
