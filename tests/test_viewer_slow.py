#!/usr/bin/python3
"""`slidepipe serve` against slow and idle clients: a flood of connections
from one address (127.0.0.2) trickling a byte every few seconds does not
keep a normal client (127.0.0.1) from getting tiles within a second; a
client whose request head is late is cut off at --header-timeout, while
one that sends its head slowly but in time is served; keep-alive: two
requests on one connection, no `Connection: close`."""
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from sptest import BIN, DATA, check, finish

CMU = os.path.join(DATA, "CMU-1-Small-Region.svs")


class Server:
    def __init__(self, *args):
        self.p = subprocess.Popen([BIN, "serve", "--port", "0", *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        line = self.p.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            self.p.kill()
            raise RuntimeError("serve did not start: %r %s" %
                               (line, self.p.stderr.read()))
        self.port = int(m.group(1))

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


class Trickler(threading.Thread):
    """n connections from `src`, each sending a request head one byte
    every `every` seconds, reconnecting never; counts those still open."""

    def __init__(self, port, n, src="127.0.0.2", every=2.0):
        super().__init__(daemon=True)
        self.port, self.n, self.src, self.every = port, n, src, every
        self.socks = []
        self.stop_ev = threading.Event()
        self.ready = threading.Event()

    def run(self):
        for _ in range(self.n):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.bind((self.src, 0))
                s.connect(("127.0.0.1", self.port))
                s.send(b"GET / HTTP/1.1\r\n")
                self.socks.append(s)
            except OSError:
                s.close()
        self.ready.set()
        while not self.stop_ev.wait(self.every):
            for s in self.socks:
                try:
                    s.send(b"X")
                except OSError:
                    pass

    def close(self):
        self.stop_ev.set()
        self.join(timeout=10)
        for s in self.socks:
            s.close()


def timed_get(port, path, timeout=2.0):
    """(status, seconds, connection header) of one request on a fresh
    connection; status 0 on a failure or timeout."""
    t0 = time.time()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status, time.time() - t0
    except (OSError, http.client.HTTPException):
        return 0, time.time() - t0


def closed_within(s, limit):
    """Seconds until the peer closes `s` (reading whatever comes), or None
    when it is still open after `limit` seconds."""
    t0 = time.time()
    s.settimeout(0.2)
    while time.time() - t0 < limit:
        try:
            if s.recv(4096) == b"":
                return time.time() - t0
        except socket.timeout:
            continue
        except OSError:
            return time.time() - t0
    return None


def main():
    t0 = time.time()
    cid = "CMU-1-Small-Region"
    tiles = [f"/dzi/{cid}_files/{lv}/0_0.jpeg" for lv in range(13)] + \
            [f"/dzi/{cid}_files/12/{c}_{r}.jpeg" for c in range(3) for r in range(3)]

    # ---- defaults: a slow flood from one address, keep-alive ----
    srv = Server(CMU)
    try:
        # warm the tile cache first: what is measured below is waiting for
        # a connection, not rendering
        for p in tiles:
            timed_get(srv.port, p, timeout=30)
        flood = Trickler(srv.port, 80)
        flood.start()
        flood.ready.wait(30)
        time.sleep(0.5)
        held = len(flood.socks)
        worst, bad = 0.0, []
        for p in tiles + ["/", f"/slide/{cid}", "/api/slides"]:
            st, dt = timed_get(srv.port, p)
            worst = max(worst, dt)
            if st != 200 or dt > 1.0:
                bad.append((p, st, round(dt, 2)))
        check(not bad, f"during a flood of {held} slow connections from "
              f"127.0.0.2, 127.0.0.1 gets every tile within 1 s "
              f"(worst {worst:.2f} s; failures {bad[:3]})")
        flood.close()

        # keep-alive: two requests on one connection
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        c.request("GET", tiles[5])
        r1 = c.getresponse()
        b1 = r1.read()
        conn1 = r1.getheader("Connection", "")
        sock1 = c.sock
        port1 = sock1.getsockname()[1] if sock1 else None
        c.request("GET", "/api/slides")
        r2 = c.getresponse()
        r2.read()
        port2 = c.sock.getsockname()[1] if c.sock else None
        check(r1.status == 200 and b1[:3] == b"\xff\xd8\xff" and
              r2.status == 200, f"two requests on one connection: "
              f"{r1.status} {r2.status}")
        check("close" not in conn1.lower() and
              "close" not in (r2.getheader("Connection") or "").lower(),
              f"no 'Connection: close' (got {conn1!r})")
        check(sock1 is not None and port1 == port2,
              f"the second request reused the connection ({port1} {port2})")
        c.close()
        # HTTP/1.0 without keep-alive still closes
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"GET /api/slides HTTP/1.0\r\n\r\n")
        check(closed_within(s, 5) is not None, "an HTTP/1.0 request is "
              "answered and closed")
        s.close()
    finally:
        rc = srv.stop()
    check(rc == 0, f"serve exits 0 on SIGTERM (got {rc})")

    # ---- the request-head deadline ----
    srv = Server("--header-timeout", "2", CMU)
    try:
        # a head trickled one byte every 0.5 s is cut at ~2 s
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        stop = threading.Event()

        def trickle():
            for ch in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                if stop.wait(0.5):
                    return
                try:
                    s.send(bytes([ch]))
                except OSError:
                    return
        th = threading.Thread(target=trickle, daemon=True)
        th.start()
        dt = closed_within(s, 8)
        stop.set()
        th.join()
        s.close()
        check(dt is not None and 1.5 <= dt <= 4.0,
              f"a late request head is cut at the deadline (after {dt} s)")
        # a head sent slowly but within the deadline is served
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        for part in (b"GET /api/sli", b"des HTTP/1.1\r\nHo", b"st: x\r\n\r\n"):
            s.sendall(part)
            time.sleep(0.4)
        s.settimeout(5)
        got = s.recv(4096)
        check(got.startswith(b"HTTP/1.1 200"), f"a slow head within the "
              f"deadline is answered: {got[:20]!r}")
        # ... and the kept-alive connection, idle past the deadline, is cut
        dt = closed_within(s, 6)
        check(dt is not None and dt <= 3.5, f"an idle kept-alive connection "
              f"is closed at the deadline (after {dt} s)")
        s.close()
        st, _ = timed_get(srv.port, tiles[3])
        check(st == 200, "still serving after the cuts")
    finally:
        rc = srv.stop()
    check(rc == 0, f"serve exits 0 on SIGTERM (got {rc})")
    print(f"({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        import traceback
        traceback.print_exc()
        check(False, "the test raised an exception")
    sys.exit(finish())
