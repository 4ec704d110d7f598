#!/usr/bin/env bash
# Validates the link emulator (src/runtime/link.ts) against Linux traffic shaping on a link between two network
# namespaces created here (see docs/link-emulator.md). Needs root, iproute2 (ip, tc) and, where the kernel lacks
# sch_netem, python3 for the TUN delay line.
# Usage: scripts/validate-link/run.sh [--quick] [--cc reno|bbr|cubic] [--out DIR]
#   --cc sets TCP congestion control inside the two namespaces only (default: the kernel's default); a namespace
#   may only pick one listed in the host's net.ipv4.tcp_allowed_congestion_control.
#
# Where to traffic goes: only between the two namespaces this script creates (10.77.x.y addresses that exist only
# inside them); nothing is configured in the root namespace and nothing can leave the machine. Every process has
# a watchdog and the namespaces are removed on exit (trap), whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCALE=1
CC=""
OUT="/tmp/hat-validate-link-$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) SCALE=0.2 ;;
    --out) OUT="$2"; shift ;;
    --cc) CC="$2"; shift ;;
    *) echo "usage: $0 [--quick] [--cc NAME] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"

[ "$(id -u)" = 0 ] || { echo "run.sh must run as root (it creates network namespaces)" >&2; exit 1; }
command -v ip >/dev/null && command -v tc >/dev/null || { echo "needs iproute2: apt-get install -y iproute2" >&2; exit 1; }

NODE="$(command -v node)"
NS_A="hat-vl-$$-a"   # the device side (WebSocket client, sends uplink frames)
NS_B="hat-vl-$$-b"   # the cloud side (WebSocket server)
PIDS=()

teardown() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && wait "$pid" 2>/dev/null || true; done
  PIDS=()
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
}
trap teardown EXIT INT TERM

# Profile numbers straight from link.ts, so the shaping always matches the emulator.
profile() { # NAME -> "up_bytes_per_s up_latency_ms up_jitter_ms down_bytes_per_s down_latency_ms down_jitter_ms"
  "$NODE" --import tsx --input-type=module -e "
    const { LINK_PROFILES } = await import('./src/runtime/link.ts');
    const p = LINK_PROFILES['$1'];
    console.log([p.up.bandwidth, p.up.latencyMs, p.up.jitterMs, p.down.bandwidth, p.down.latencyMs, p.down.jitterMs].join(' '));"
}

make_namespaces() {
  ip netns add "$NS_A"
  ip netns add "$NS_B"
  ip -n "$NS_A" link set lo up
  ip -n "$NS_B" link set lo up
  if [ -n "$CC" ]; then
    ip netns exec "$NS_A" sh -c "echo $CC > /proc/sys/net/ipv4/tcp_congestion_control"
    ip netns exec "$NS_B" sh -c "echo $CC > /proc/sys/net/ipv4/tcp_congestion_control"
  fi
}

# veth pair with one end in each namespace: 10.77.1.1 (A) <-> 10.77.1.2 (B).
make_veth() {
  ip link add hatv0 netns "$NS_A" type veth peer name hatv1 netns "$NS_B"
  ip -n "$NS_A" addr add 10.77.1.1/30 dev hatv0
  ip -n "$NS_B" addr add 10.77.1.2/30 dev hatv1
  ip -n "$NS_A" link set hatv0 up
  ip -n "$NS_B" link set hatv1 up
  DEV_A=hatv0; DEV_B=hatv1; SERVER_IP=10.77.1.2
}

# Two TUN devices joined by scripts/validate-link/delay-line.py: 10.77.0.1 (A) <-> 10.77.0.2 (B).
make_tun() { # UP_DELAY UP_JITTER DOWN_DELAY DOWN_JITTER
  ip -n "$NS_A" tuntap add dev hatt0 mode tun
  ip -n "$NS_B" tuntap add dev hatt1 mode tun
  ip -n "$NS_A" addr add 10.77.0.1 peer 10.77.0.2 dev hatt0
  ip -n "$NS_B" addr add 10.77.0.2 peer 10.77.0.1 dev hatt1
  ip -n "$NS_A" link set hatt0 up
  ip -n "$NS_B" link set hatt1 up
  python3 scripts/validate-link/delay-line.py --a "$NS_A:hatt0" --b "$NS_B:hatt1" \
    --ab-delay-ms "$1" --ab-jitter-ms "$2" --ba-delay-ms "$3" --ba-jitter-ms "$4" --max-seconds 900 &
  PIDS+=($!)
  DEV_A=hatt0; DEV_B=hatt1; SERVER_IP=10.77.0.2
}

# tbf: a token bucket of two MTUs (so the rate holds packet by packet) and a 1.5 MB queue (netem's default 1000
# packets). Rate in bit/s (tc's "bps" would mean bytes per second).
shape_tbf() { # NS DEV BYTES_PER_S
  ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "$(( $3 * 8 ))bit" burst 3000 limit 1500000
}
shape_netem() { # NS DEV BYTES_PER_S DELAY_MS JITTER_MS
  ip netns exec "$1" tc qdisc add dev "$2" root netem rate "$(( $3 * 8 ))bit" delay "$4ms" "$5ms" limit 1000
}

# One measurement: server in B, client in A; prints one markdown row per (pattern, size).
measure() { # LABEL EMU_BANDWIDTH EMU_LATENCY EMU_JITTER [SCALE]
  timeout 700 ip netns exec "$NS_B" "$NODE" --import tsx scripts/validate-link/measure.ts server \
    --host "$SERVER_IP" --port 9777 --max-seconds 680 > "$OUT/server-$1.log" 2>&1 &
  PIDS+=($!)
  timeout 700 ip netns exec "$NS_A" "$NODE" --import tsx scripts/validate-link/measure.ts client \
    --url "ws://$SERVER_IP:9777" --label "$1" --bandwidth "$2" --latency "$3" --jitter "$4" \
    --scale "${5:-$SCALE}" --max-seconds 680 --json "$OUT/$1.json" | tee -a "$OUT/table.md"
  ip netns exec "$NS_A" tc -s qdisc show dev "$DEV_A" > "$OUT/qdisc-$1.txt"
}

# Does this kernel have netem? Probe in a throwaway namespace of our own.
HAVE_NETEM=0
make_namespaces
if ip netns exec "$NS_A" tc qdisc add dev lo root netem delay 1ms 2> "$OUT/netem-probe.txt"; then HAVE_NETEM=1; fi
TCP_CC="$(ip netns exec "$NS_A" cat /proc/sys/net/ipv4/tcp_congestion_control)"
teardown

{
  echo "# link emulator vs kernel shaping — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(uname -r), node $("$NODE" --version), TCP congestion control $TCP_CC"
  if [ "$HAVE_NETEM" = 1 ]; then echo "# shaping: tc netem (rate + delay + jitter) on a veth pair";
  else echo "# tc netem unavailable here ($(cat "$OUT/netem-probe.txt")): tbf rate on veth, and tbf rate + TUN delay line"; fi
  echo
  echo "| link | pattern | frame | n | measured mean ms | emulator mean ms | ratio | measured p90 ms | emulator p90 ms | ratio | burst done ms measured / emulator (ratio) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
} | tee "$OUT/table.md"

for name in wifi 4g; do
  read -r UP_BW UP_LAT UP_JIT DOWN_BW DOWN_LAT DOWN_JIT < <(profile "$name")
  if [ "$HAVE_NETEM" = 1 ]; then
    make_namespaces; make_veth
    shape_netem "$NS_A" "$DEV_A" "$UP_BW" "$UP_LAT" "$UP_JIT"
    shape_netem "$NS_B" "$DEV_B" "$DOWN_BW" "$DOWN_LAT" "$DOWN_JIT"
    measure "$name-netem" "$UP_BW" "$UP_LAT" "$UP_JIT"
    teardown
  else
    # 1. Rate alone, all in the kernel: tbf on a veth pair vs the emulator with the profile's bandwidth only.
    make_namespaces; make_veth
    shape_tbf "$NS_A" "$DEV_A" "$UP_BW"
    shape_tbf "$NS_B" "$DEV_B" "$DOWN_BW"
    measure "$name-rate-veth-tbf" "$UP_BW" 0 0
    teardown
    # 2. The whole profile: tbf rate on TUN devices + the delay line's latency ± jitter in both directions.
    make_namespaces; make_tun "$UP_LAT" "$UP_JIT" "$DOWN_LAT" "$DOWN_JIT"
    shape_tbf "$NS_A" "$DEV_A" "$UP_BW"
    shape_tbf "$NS_B" "$DEV_B" "$DOWN_BW"
    measure "$name-tun-tbf-delay" "$UP_BW" "$UP_LAT" "$UP_JIT"
    teardown
  fi
done

# Baselines: the same links unshaped, i.e. what the stack, WebSocket and (for TUN) the delay line cost by themselves.
make_namespaces; make_veth; measure "unshaped-veth" Infinity 0 0 0.5; teardown
if [ "$HAVE_NETEM" = 0 ]; then make_namespaces; make_tun 0 0 0 0; measure "unshaped-tun" Infinity 0 0 0.5; teardown; fi

echo
echo "results: $OUT (table.md, one JSON per link with every frame, qdisc statistics)"
