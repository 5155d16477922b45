#!/usr/bin/env bash
# Makes sure the services the tests talk to are running: an MQTT broker
# (Mosquitto) on 127.0.0.1:1883. Installs it from Debian's packages when it
# is missing. Usage: bash scripts/services.sh
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if port_open 1883; then
  echo "== mosquitto: running on 127.0.0.1:1883"
  exit 0
fi
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "== mosquitto: installing"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto
fi
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
echo "== mosquitto: starting on 127.0.0.1:1883"
# Without a configuration file Mosquitto 2 listens on the loopback interface
# only and lets anonymous clients in: what the tests need, nothing more.
"$MOSQUITTO" -d -p 1883
for _ in $(seq 50); do
  if port_open 1883; then exit 0; fi
  sleep 0.1
done
echo "mosquitto did not start" >&2
exit 1
