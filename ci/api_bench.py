#!/usr/bin/env python3
"""Control-plane benchmark of Firecracker-compatible VMMs (tandem and Firecracker).

Each VMM binary is started as `BIN --api-sock SOCK --id ID [EXTRA...]` (no
subcommand: Firecracker's flags) and driven over its HTTP API on the Unix
socket with the standard library only. Per run it measures:

  api_ready_ms      exec → the first successful `GET /` answer (socket polled
                    every 100 µs)
  start_to_guest_ms the `PUT /actions {"action_type":"InstanceStart"}` request
                    sent → the payload's marker byte read from the VMM's stdout
                    pipe (the first guest instruction that has a visible effect)
  pause_us          `PATCH /vm {"state":"Paused"}` round trip (CYCLES per run)
  resume_us         `PATCH /vm {"state":"Resumed"}` round trip (CYCLES per run)
  sigterm_exit_ms   SIGTERM → the process reaped (with its exit status)

Configuration before InstanceStart: `PUT /machine-config {"vcpu_count":1,
"mem_size_mib":128}` and `PUT /boot-source {"kernel_image_path": KERNEL}`,
where KERNEL is ci/tiny-pvh.py's payload writing MARKER (default 0xff, a byte
that no UTF-8 log line holds: Firecracker logs to stdout too) and then
spinning (`jmp .`, one host core busy while running), or halting (--halt). Runs of the
VMMs are interleaved; run 0 is a warm-up and not counted.

Prints `bench-api: vmm=NAME metric=M median=… p99=… min=… max=… n=…` lines
and a markdown table; with two VMMs the ratio is tandem/firecracker (or the
second over the first when not so named).

Usage: ci/api_bench.py --vmm NAME=PATH [--vmm NAME=PATH] [--extra NAME=ARGS]
                       [--runs N] [--cycles N] [--marker 0xNN] [--halt] [--workdir DIR]
"""
import argparse
import http.client
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NS = time.perf_counter_ns
METRICS = [
    ("api_ready_ms", "exec → API socket answers `GET /`", "ms"),
    ("start_to_guest_ms", "InstanceStart sent → guest's first serial byte", "ms"),
    ("pause_us", "PATCH /vm Paused round trip", "µs"),
    ("resume_us", "PATCH /vm Resumed round trip", "µs"),
    ("sigterm_exit_ms", "SIGTERM → process exit", "ms"),
]
TIMEOUT_S = 10.0


class Failure(Exception):
    pass


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, path, timeout=TIMEOUT_S):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


def call(conn, method, path, body=None):
    """One request on a kept-alive connection; returns (status, body bytes)."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    res = conn.getresponse()
    return res.status, res.read()


def expect(conn, method, path, body=None, ok=(200, 204)):
    status, data = call(conn, method, path, body)
    if status not in ok:
        raise Failure(f"{method} {path} -> {status} {data.decode(errors='replace')[:300]}")
    return data


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-len(s) * q // 100) - 1))
    return s[int(k)]


class StdoutWatcher(threading.Thread):
    """Drains the VMM's stdout; notes when MARKER first arrives after arm()."""

    def __init__(self, fd, marker, keep):
        super().__init__(daemon=True)
        self.fd, self.marker, self.keep = fd, marker, keep
        self.armed_at = None
        self.seen_at = None
        self.event = threading.Event()

    def arm(self, t):
        self.armed_at = t

    def run(self):
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            now = NS()
            if not chunk:
                break
            self.keep.write(chunk)
            if self.seen_at is None and self.armed_at is not None and self.marker in chunk:
                self.seen_at = now
                self.event.set()
        self.event.set()


class Vmm:
    def __init__(self, name, binary, extra, workdir, kernel, marker):
        self.name, self.binary, self.extra = name, binary, extra
        self.workdir, self.kernel, self.marker = workdir, kernel, marker
        self.proc = None
        self.version = "?"

    def run_once(self, run, cycles):
        sock = os.path.join(self.workdir, f"{self.name}-{run}.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        out_log = open(os.path.join(self.workdir, f"{self.name}-{run}.stdout"), "wb")
        err_log = open(os.path.join(self.workdir, f"{self.name}-{run}.stderr"), "wb")
        argv = [self.binary, "--api-sock", sock, "--id", f"bench-{self.name}-{run}", *self.extra]
        result = {}
        try:
            t0 = NS()
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err_log, start_new_session=True)
            watcher = StdoutWatcher(self.proc.stdout.fileno(), self.marker, out_log)
            watcher.start()
            # (a) exec → first successful GET /
            deadline = t0 + int(TIMEOUT_S * 1e9)
            while True:
                if self.proc.poll() is not None:
                    raise Failure(f"exited {self.proc.returncode} before answering GET /")
                try:
                    c = UnixHTTPConnection(sock)
                    status, _ = call(c, "GET", "/")
                    c.close()
                    if status == 200:
                        result["api_ready_ms"] = [(NS() - t0) / 1e6]
                        break
                except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError,
                        http.client.RemoteDisconnected, BrokenPipeError):
                    pass
                if NS() > deadline:
                    raise Failure(f"no answer to GET / within {TIMEOUT_S:.0f} s")
                time.sleep(0.0001)
            conn = UnixHTTPConnection(sock)
            if run == 0:
                try:
                    self.version = json.loads(expect(conn, "GET", "/version")).get(
                        "firecracker_version", "?")
                except (Failure, ValueError):
                    self.version = "?"
            expect(conn, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 128})
            expect(conn, "PUT", "/boot-source", {"kernel_image_path": self.kernel})
            # (b) InstanceStart sent → marker byte on stdout
            t_send = NS()
            watcher.arm(t_send)
            expect(conn, "PUT", "/actions", {"action_type": "InstanceStart"})
            t_answer = NS()
            if not watcher.event.wait(TIMEOUT_S) or watcher.seen_at is None:
                raise Failure(f"no marker byte 0x{self.marker[0]:02x} on stdout within "
                              f"{TIMEOUT_S:.0f} s of InstanceStart")
            result["start_to_guest_ms"] = [(watcher.seen_at - t_send) / 1e6]
            result["instance_start_answer_ms"] = [(t_answer - t_send) / 1e6]
            # (c) pause / resume round trips
            pause, resume = [], []
            for _ in range(cycles):
                t = NS()
                expect(conn, "PATCH", "/vm", {"state": "Paused"})
                t1 = NS()
                expect(conn, "PATCH", "/vm", {"state": "Resumed"})
                t2 = NS()
                pause.append((t1 - t) / 1e3)
                resume.append((t2 - t1) / 1e3)
            result["pause_us"], result["resume_us"] = pause, resume
            conn.close()
            # (d) SIGTERM → exit
            t = NS()
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise Failure(f"still running {TIMEOUT_S:.0f} s after SIGTERM") from None
            result["sigterm_exit_ms"] = [(NS() - t) / 1e6]
            result["exit_status"] = code
            return result
        finally:
            self.kill()
            out_log.close()
            err_log.close()
            if os.path.exists(sock):
                os.unlink(sock)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if self.proc is not None and self.proc.stdin:
            self.proc.stdin.close()

    def tail(self, run):
        lines = []
        for kind in ("stdout", "stderr"):
            path = os.path.join(self.workdir, f"{self.name}-{run}.{kind}")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    text = f.read()[-2000:].decode(errors="replace")
                lines += [f"  {kind}: {line}" for line in text.splitlines()[-15:]]
        return "\n".join(lines)


def fmt(v):
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vmm", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=ARGS",
                    help="more arguments for that VMM (shell words), e.g. firecracker=--no-seccomp")
    ap.add_argument("--runs", type=int, default=5, help="measured runs per VMM (default 5)")
    ap.add_argument("--cycles", type=int, default=1000, help="pause/resume cycles per run (default 1000)")
    ap.add_argument("--marker", default="0xff", help="the payload's serial byte (default 0xff)")
    ap.add_argument("--halt", action="store_true",
                    help="the payload halts (hlt loop) after its byte instead of spinning")
    ap.add_argument("--workdir", help="scratch folder (default: a new one under /tmp, removed)")
    args = ap.parse_args()

    marker = int(args.marker, 16) if args.marker.startswith("0x") else ord(args.marker)
    extra = {}
    for e in args.extra:
        name, _, words = e.partition("=")
        extra[name] = shlex.split(words)
    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tandem-api-bench-")
        workdir = tmp.name
    os.makedirs(workdir, exist_ok=True)
    kernel = os.path.join(workdir, "tiny-pvh-marker.elf")
    subprocess.run([sys.executable, os.path.join(HERE, "tiny-pvh.py"), kernel,
                    "--byte", f"0x{marker:02x}", *(["--halt"] if args.halt else [])], check=True)

    vmms = []
    for v in args.vmm:
        name, sep, path = v.partition("=")
        if not sep or not name or not os.access(path, os.X_OK):
            ap.error(f"--vmm {v}: want NAME=PATH to an executable")
        vmms.append(Vmm(name, os.path.abspath(path), extra.get(name, []), workdir, kernel,
                        bytes([marker])))

    load = os.getloadavg()
    print(f"bench-api: machine date={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
          f"kernel={os.uname().release} cpus={os.cpu_count()} loadavg={load[0]:.2f} "
          f"runs={args.runs} cycles={args.cycles} payload={'halt' if args.halt else 'spin'}",
          flush=True)
    samples = {v.name: {} for v in vmms}
    status = {v.name: set() for v in vmms}

    def interrupted(signum, _frame):
        # Unwind: the finally clauses below kill and reap every VMM.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    failed = False
    try:
        for run in range(args.runs + 1):
            for v in vmms:
                try:
                    r = v.run_once(run, args.cycles if run else min(args.cycles, 100))
                except (Failure, OSError, http.client.HTTPException) as e:
                    print(f"bench-api: vmm={v.name} run={run} FAILED: {e}\n{v.tail(run)}",
                          file=sys.stderr, flush=True)
                    failed = True
                    continue
                if run == 0:
                    print(f"bench-api: vmm={v.name} binary={v.binary} version={v.version} "
                          f"args={shlex.join(v.extra) or '-'} warm-up ok", flush=True)
                    continue
                status[v.name].add(r.pop("exit_status"))
                for k, vals in r.items():
                    samples[v.name].setdefault(k, []).extend(vals)
                print(f"bench-api: vmm={v.name} run={run} api_ready_ms={fmt(r['api_ready_ms'][0])} "
                      f"start_to_guest_ms={fmt(r['start_to_guest_ms'][0])} "
                      f"pause_us_median={fmt(statistics.median(r['pause_us']))} "
                      f"resume_us_median={fmt(statistics.median(r['resume_us']))} "
                      f"sigterm_exit_ms={fmt(r['sigterm_exit_ms'][0])}", flush=True)
    finally:
        for v in vmms:
            v.kill()
        if tmp is not None:
            tmp.cleanup()

    medians = {}
    for v in vmms:
        for key, _, _ in METRICS + [("instance_start_answer_ms", "", "ms")]:
            vals = samples[v.name].get(key)
            if not vals:
                continue
            med = statistics.median(vals)
            medians[(v.name, key)] = med
            print(f"bench-api: vmm={v.name} metric={key} median={fmt(med)} "
                  f"p99={fmt(percentile(vals, 99))} min={fmt(min(vals))} max={fmt(max(vals))} "
                  f"n={len(vals)}", flush=True)
        codes = ",".join(str(c) for c in sorted(status[v.name]))
        print(f"bench-api: vmm={v.name} metric=sigterm_exit_status values={codes or '-'} "
              "(negative: killed by that signal)", flush=True)

    names = [v.name for v in vmms]
    pair = None
    if "tandem" in names and "firecracker" in names:
        pair = ("tandem", "firecracker")
    elif len(names) == 2:
        pair = (names[1], names[0])
    print()
    header = "| metric | " + " | ".join(names) + (f" | {pair[0]}/{pair[1]} |" if pair else " |")
    print(header)
    print("|---" * (len(header.split("|")) - 2) + "|")
    for key, what, unit in METRICS:
        for stat in ("median", "p99") if key.endswith("_us") else ("median",):
            cells = []
            vals = {}
            for n in names:
                s = samples[n].get(key)
                val = None
                if s:
                    val = statistics.median(s) if stat == "median" else percentile(s, 99)
                vals[n] = val
                cells.append(fmt(val) if val is not None else "-")
            row = f"| {what} ({unit}, {stat}) | " + " | ".join(cells)
            if pair:
                a, b = vals[pair[0]], vals[pair[1]]
                row += f" | {a / b:.2f}" if a is not None and b else " | -"
            print(row + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
