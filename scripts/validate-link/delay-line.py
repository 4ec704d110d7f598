#!/usr/bin/env python3
"""Userspace delay line between two TUN devices in two network namespaces (test helper for run.sh).

The sandbox kernel this was written on has no sch_netem (CONFIG_NET_SCH_NETEM is not set), so the kernel's
tbf qdisc does the rate shaping on each TUN device's egress and this program adds netem's other half: a
one-way delay of latency +- uniform jitter per packet, in order (like `netem delay L J` with a pfifo child,
and like the emulator). It only moves packets between the two TUN devices it attached; it opens no sockets.
It stops by itself after --max-seconds, or on SIGTERM/SIGINT.
"""
import argparse, ctypes, fcntl, os, random, select, signal, struct, sys, time
from collections import deque

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name):
    fd = os.open(f'/var/run/netns/{name}', os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f'setns({name}): {os.strerror(err)}')
    finally:
        os.close(fd)


def attach_tun(netns, ifname):
    """Attaches to the persistent TUN device `ifname` (created by `ip tuntap`) inside `netns`."""
    enter_netns(netns)
    fd = os.open('/dev/net/tun', os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH', ifname.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--a', required=True, help='NETNS:IFNAME of side A')
    p.add_argument('--b', required=True, help='NETNS:IFNAME of side B')
    p.add_argument('--ab-delay-ms', type=float, default=0.0)
    p.add_argument('--ab-jitter-ms', type=float, default=0.0)
    p.add_argument('--ba-delay-ms', type=float, default=0.0)
    p.add_argument('--ba-jitter-ms', type=float, default=0.0)
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--max-seconds', type=float, default=900.0)
    args = p.parse_args()

    fa = attach_tun(*args.a.split(':'))
    fb = attach_tun(*args.b.split(':'))
    rng = random.Random(args.seed)
    # direction: (source fd, destination fd, delay s, jitter s, queue of (due, packet), [last due])
    dirs = {
        fa: (fb, args.ab_delay_ms / 1e3, args.ab_jitter_ms / 1e3, deque(), [0.0]),
        fb: (fa, args.ba_delay_ms / 1e3, args.ba_jitter_ms / 1e3, deque(), [0.0]),
    }
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    deadline = time.monotonic() + args.max_seconds
    print('delay-line ready', flush=True)
    forwarded = 0
    while not stop[0]:
        now = time.monotonic()
        if now >= deadline:
            print('delay-line: --max-seconds reached', file=sys.stderr)
            break
        next_due = None
        for dst, _, _, queue, _ in dirs.values():
            while queue and queue[0][0] <= now:
                try:
                    os.write(dst, queue.popleft()[1])
                    forwarded += 1
                except OSError:
                    pass  # device queue full or down: the packet is lost, as on a real link
            if queue and (next_due is None or queue[0][0] < next_due):
                next_due = queue[0][0]
        timeout = 0.2 if next_due is None else max(0.0, next_due - now)
        try:
            readable, _, _ = select.select([fa, fb], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for src in readable:
            _, delay, jitter, queue, last = dirs[src]
            for _ in range(256):
                try:
                    packet = os.read(src, 65536)
                except BlockingIOError:
                    break
                due = now + max(0.0, delay + (rng.uniform(-jitter, jitter) if jitter else 0.0))
                due = max(due, last[0])  # never reorder
                last[0] = due
                queue.append((due, packet))
    print(f'delay-line: forwarded {forwarded} packets', file=sys.stderr)


if __name__ == '__main__':
    main()
