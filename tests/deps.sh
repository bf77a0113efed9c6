#!/usr/bin/env bash
# Installs what the test suite drives besides Rust crates, idempotently:
#   - Debian's chromium and chromium-driver (the web UI test),
#   - the Go toolchain and amqp091-go, the RabbitMQ Go client (Debian's
#     golang-go, golang-github-rabbitmq-amqp091-go-dev),
#   - the Python clients of tests/clients/requirements.txt, into target/pydeps.
# The tests run it themselves when something is missing; .ci/run runs it
# first. Debian packages need root (or an already set-up machine).
set -uo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/rabbitmq/amqp091-go ] || need+=(golang-github-rabbitmq-amqp091-go-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "deps.sh: apt-get install ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq "${need[@]}" >/dev/null; } ||
      echo "deps.sh: could not install ${need[*]}" >&2
  else
    echo "deps.sh: missing ${need[*]} (install them as root: apt-get install ${need[*]})" >&2
  fi
fi

req=tests/clients/requirements.txt
mark=target/pydeps/.installed
if ! cmp -s "$req" "$mark" 2>/dev/null; then
  echo "deps.sh: pip install -r $req into target/pydeps" >&2
  mkdir -p target/pydeps
  if python3 -m pip install --quiet --disable-pip-version-check --upgrade --target target/pydeps -r "$req" >&2; then
    cp "$req" "$mark"
  else
    echo "deps.sh: could not install the Python clients" >&2
  fi
fi
exit 0
