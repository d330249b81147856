#!/usr/bin/env python3
"""Snapshot benchmark of Firecracker-compatible VMMs (tandem and Firecracker).

Per run and VMM, with ci/tiny-pvh.py's counting payload (--count: a byte on
the serial port per count) in a VM of MEM MiB and one vCPU, all through the
HTTP API on the Unix socket (standard library only, ci/api_bench.py's
client):

  create_ms       `PUT /snapshot/create` round trip of the paused VM (full
                  snapshot: state file + memory file)
  state_bytes     the state file's size
  mem_alloc_mib   the memory file's allocated size (du), beside its length
  load_ms         `PUT /snapshot/load {resume_vm: true}` round trip in a new
                  process of the same VMM
  load_to_guest_ms  that request sent → the first byte the restored guest
                  writes (the guest running again)
  continues       the first byte after restore is the last one before + 1

Both VMMs log to a file (--log-path), so stdout is the guest's alone. Runs
interleave the VMMs; run 0 is a warm-up. Prints `bench-snapshot: …` lines
and a markdown table with the tandem/firecracker ratio.

Usage: ci/snapshot_bench.py --vmm NAME=PATH [--vmm NAME=PATH] [--runs N]
                            [--mem MIB] [--workdir DIR]
"""
import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api_bench import NS, TIMEOUT_S, Failure, UnixHTTPConnection, call, expect  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
METRICS = [
    ("create_ms", "PUT /snapshot/create round trip (paused VM)", "ms"),
    ("load_ms", "PUT /snapshot/load (resume_vm) round trip, new process", "ms"),
    ("load_to_guest_ms", "load sent → restored guest's first serial byte", "ms"),
    ("mem_alloc_mib", "memory file, allocated (du)", "MiB"),
    ("state_bytes", "state file", "bytes"),
]


class Guest:
    """One VMM process; its stdout (the guest's serial output) collected."""

    def __init__(self, binary, workdir, tag):
        self.sock = os.path.join(workdir, f"{tag}.sock")
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        log = os.path.join(workdir, f"{tag}.log")
        open(log, "w").close()
        self.stderr = open(os.path.join(workdir, f"{tag}.stderr"), "wb")
        self.proc = subprocess.Popen(
            [binary, "--api-sock", self.sock, "--id", tag, "--log-path", log],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr,
            start_new_session=True)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.output = b""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                conn = UnixHTTPConnection(self.sock)
                if call(conn, "GET", "/")[0] == 200:
                    self.conn = conn
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Failure(f"{binary}: API not ready")
            time.sleep(0.0005)

    def read(self):
        try:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return b""
        self.output += chunk
        return chunk

    def wait_output(self, count):
        """Polls stdout until COUNT bytes arrived; returns the time of the first."""
        first = None
        deadline = time.monotonic() + TIMEOUT_S
        fd = self.proc.stdout.fileno()
        while len(self.output) < count:
            # Sleeps until output comes: a busy wait would take a core from the guest.
            select.select([fd], [], [], 0.1)
            if self.read() and first is None:
                first = NS()
            if time.monotonic() > deadline:
                raise Failure(f"only {len(self.output)} bytes of guest output")
        return first

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.stderr.close()


def run_once(binary, workdir, tag, kernel, mem_mib):
    state = os.path.join(workdir, f"{tag}.state")
    memory = os.path.join(workdir, f"{tag}.mem")
    result = {}
    first = Guest(binary, workdir, f"{tag}-a")
    try:
        expect(first.conn, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": mem_mib})
        expect(first.conn, "PUT", "/boot-source", {"kernel_image_path": kernel})
        expect(first.conn, "PUT", "/actions", {"action_type": "InstanceStart"})
        first.wait_output(4)
        expect(first.conn, "PATCH", "/vm", {"state": "Paused"})
        first.read()
        t = NS()
        expect(first.conn, "PUT", "/snapshot/create",
               {"snapshot_path": state, "mem_file_path": memory})
        result["create_ms"] = (NS() - t) / 1e6
        first.read()
        last = first.output[-1]
    finally:
        first.stop()
    result["state_bytes"] = os.stat(state).st_size
    st = os.stat(memory)
    if st.st_size != mem_mib << 20:
        raise Failure(f"memory file is {st.st_size} bytes, not {mem_mib} MiB")
    result["mem_alloc_mib"] = st.st_blocks * 512 / (1 << 20)

    second = Guest(binary, workdir, f"{tag}-b")
    try:
        t = NS()
        expect(second.conn, "PUT", "/snapshot/load", {
            "snapshot_path": state,
            "mem_backend": {"backend_type": "File", "backend_path": memory},
            "resume_vm": True})
        result["load_ms"] = (NS() - t) / 1e6
        seen = second.wait_output(1)
        result["load_to_guest_ms"] = (seen - t) / 1e6
        result["continues"] = second.output[0] == (last + 1) % 256
    finally:
        second.stop()
        for path in (state, memory):
            os.unlink(path)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vmm", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--mem", type=int, default=512, help="guest MiB (default 512)")
    ap.add_argument("--workdir", help="scratch folder (default: a new one under /var/tmp)")
    args = ap.parse_args()
    tmp = None
    workdir = args.workdir
    if workdir is None:
        # /var/tmp: memory files are disk-backed there, not tmpfs.
        tmp = tempfile.TemporaryDirectory(prefix="tandem-snap-bench-", dir="/var/tmp")
        workdir = tmp.name
    kernel = os.path.join(workdir, "counter.elf")
    subprocess.run([sys.executable, os.path.join(HERE, "tiny-pvh.py"), kernel, "--count"],
                   check=True)
    vmms = [v.partition("=")[::2] for v in args.vmm]
    load = os.getloadavg()[0]
    print(f"bench-snapshot: date={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
          f"kernel={os.uname().release} cpus={os.cpu_count()} loadavg={load:.2f} "
          f"runs={args.runs} mem_mib={args.mem} fs={workdir}", flush=True)
    samples = {name: {} for name, _ in vmms}
    failed = False
    try:
        for run in range(args.runs + 1):
            for name, binary in vmms:
                try:
                    r = run_once(os.path.abspath(binary), workdir, f"{name}-{run}", kernel,
                                 args.mem)
                except (Failure, OSError) as e:
                    print(f"bench-snapshot: vmm={name} run={run} FAILED: {e}", flush=True)
                    failed = True
                    continue
                print(f"bench-snapshot: vmm={name} run={run} " +
                      " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in r.items()), flush=True)
                if not r["continues"]:
                    print(f"bench-snapshot: vmm={name} run={run} FAILED: the restored guest "
                          "did not go on from its last count", flush=True)
                    failed = True
                if run:
                    for k, v in r.items():
                        samples[name].setdefault(k, []).append(v)
    finally:
        if tmp is not None:
            tmp.cleanup()
    names = [n for n, _ in vmms]
    print("\n| metric | " + " | ".join(names) +
          (" | tandem/firecracker |" if names == ["firecracker", "tandem"] else " |"))
    print("|---" * (len(names) + 1 + (names == ["firecracker", "tandem"])) + "|")
    for key, label, unit in METRICS:
        meds = [statistics.median(samples[n][key]) if samples[n].get(key) else None
                for n in names]
        cells = [f"{m:.1f}" if m is not None else "—" for m in meds]
        ratio = ""
        if names == ["firecracker", "tandem"] and None not in meds and meds[0]:
            ratio = f" {meds[1] / meds[0]:.2f} |"
        print(f"| {label} ({unit}, median) | " + " | ".join(cells) + " |" + ratio)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
