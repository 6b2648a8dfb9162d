#!/usr/bin/env bash
# The echo demo: starts examples/echo_server.py on a free UDP port of 127.0.0.1 (or on $PORT),
# echoes 5 MB through it with examples/echo_client.py (AES, FEC 10/3, mode fast3), and stops
# the server. Each line says whose it is. Exit status: the client's (0: the echo was intact);
# 1 if the server could not start (with PORT=N: the port is busy).
set -euo pipefail
cd "$(dirname "$0")"
settings=(--crypt aes --key demo --fec 10/3 --mode fast3)
out=$(mktemp)
server=
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
    rm -f "$out"
}
trap cleanup EXIT
echo "demo: starting the echo server: echo_server.py ${settings[*]} --once"
python3 echo_server.py --port "${PORT:-0}" "${settings[@]}" --once >"$out" 2>&1 &
server=$!
port=
for _ in $(seq 200); do                 # up to 20 s for "listening on ('127.0.0.1', PORT)"
    port=$(sed -n "s/^listening on ('[^']*', \([0-9]*\))\$/\1/p" "$out")
    if [ -n "$port" ] || ! kill -0 "$server" 2>/dev/null; then break; fi
    sleep 0.1
done
sed 's/^/server: /' "$out"
if [ -z "$port" ]; then
    echo "demo: the echo server did not start (see above); PORT=N picks another port" >&2
    exit 1
fi
echo "demo: echoing 5 MB through it: echo_client.py --port $port ${settings[*]} --mb 5"
python3 echo_client.py --port "$port" "${settings[@]}" --mb 5 2>&1 | sed 's/^/client: /'
