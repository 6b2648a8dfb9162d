#!/usr/bin/env bash
# Starts the echo server, echoes 5 MB through it with AES + FEC 10/3, and stops the server.
set -euo pipefail
cd "$(dirname "$0")"
port=${PORT:-19000}
python3 echo_server.py --port "$port" --crypt aes --key demo --fec 10/3 --once &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 1
python3 echo_client.py --port "$port" --crypt aes --key demo --fec 10/3 --mb 5
