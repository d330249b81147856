#!/usr/bin/env python3
"""Drives a Firecracker-compatible VMM with a third-party PyPI client, unmodified.

Runs inside the venv ci/api-client-flow.sh makes, where the pinned client
(hysn-firecracker-python, or firecracker-python: both ship the same
`firecracker.api.Api` class) is installed. This script starts the VMM itself,
`BIN --api-sock SOCK --id ID [EXTRA...]` (the client's own launcher,
`ProcessManager.start`, only runs /usr/local/bin/firecracker), and then uses
nothing but the client's `Api` object, given only the socket path:

  create      Api(SOCK); api.describe.get() until the socket answers
  configure   api.machine_config.put(vcpu_count=1, mem_size_mib=128),
              api.boot.put(kernel_image_path=KERNEL, boot_args=...)
  start       api.actions.put(action_type="InstanceStart"); KERNEL's marker
              byte (ci/tiny-pvh.py) must then appear on the VMM's stdout
  pause       api.vm.patch(state="Paused"), api.describe.get() says Paused
  resume      api.vm.patch(state="Resumed"), api.describe.get() says Running
  inspect     api.vm_config.get(), api.version.get()
  stop        SIGTERM (Firecracker's API has no stop action; the client's
              ProcessManager.stop also sends SIGTERM, but finds the process by
              its pid file under /var/lib/firecracker/ID/)

Prints each step and `api-client-flow: PASS`, or `api-client-flow: FAIL: why`.
Usage: api-client-flow.py --vmm PATH --kernel KERNEL [--marker R] [--extra ARGS]
"""
import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time

PREFIX = "api-client-flow:"
STEP_TIMEOUT_S = 10.0


def say(msg):
    print(f"{PREFIX} {msg}", flush=True)


class Fail(Exception):
    pass


def wait_for(what, predicate, timeout=STEP_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the client raises its own APIError while the socket is absent
            last = e
        time.sleep(0.01)
    raise Fail(f"{what}: not within {timeout:.0f} s (last error: {last})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vmm", required=True, help="the VMM binary (Firecracker's flags)")
    ap.add_argument("--kernel", required=True, help="a ci/tiny-pvh.py payload")
    ap.add_argument("--marker", default="R", help="the payload's serial byte (default R)")
    ap.add_argument("--extra", default="", help="more VMM arguments (shell words)")
    args = ap.parse_args()

    # The client's package runs checks at import: it prints a warning when
    # /usr/local/bin/firecracker is missing, and when that binary exists it
    # creates /var/lib/firecracker (and snapshots/) if absent. Its classes are
    # otherwise used as shipped.
    from firecracker.api import Api
    from firecracker.exceptions import APIError
    try:
        from importlib.metadata import version as dist_version
        client = next(f"{d}=={dist_version(d)}" for d in
                      ("hysn-firecracker-python", "firecracker-python")
                      if _installed(d))
    except StopIteration:
        client = "firecracker.api (unknown distribution)"
    say(f"client {client}; vmm {args.vmm} {args.extra}".rstrip())

    work = tempfile.mkdtemp(prefix="tandem-api-client-")
    sock = os.path.join(work, "api.sock")
    marker = args.marker.encode()
    proc = None
    out = bytearray()
    seen = threading.Event()

    def drain(fd):
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out.extend(chunk)
            if marker in chunk:
                seen.set()

    def stop(*_):
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if os.path.exists(sock):
            os.unlink(sock)
        try:
            os.rmdir(work)
        except OSError:
            pass

    def interrupted(signum, _frame):
        raise SystemExit(128 + signum)  # the finally clause below kills the VMM

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    api = None
    try:
        argv = [args.vmm, "--api-sock", sock, "--id", "api-client-flow", *shlex.split(args.extra)]
        say(f"step create: spawn {shlex.join(argv)}")
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        threading.Thread(target=drain, args=(proc.stdout.fileno(),), daemon=True).start()
        err = bytearray()
        threading.Thread(target=lambda: err.extend(proc.stderr.read()), daemon=True).start()
        try:
            api = Api(sock, timeout=5)  # hysn-firecracker-python
        except TypeError:
            api = Api(sock)  # firecracker-python: no timeout argument
        info = wait_for("GET / through api.describe.get()",
                        lambda: proc.poll() is None and api.describe.get().json())
        say(f"step create: ok, describe -> {info}")

        def put(what, resource, method, **body):
            try:
                res = getattr(resource, method)(**body)
            except APIError as e:
                raise Fail(f"{what}: {e}") from None
            say(f"step {what}: ok ({res.status_code})")

        put("configure machine-config", api.machine_config, "put", vcpu_count=1, mem_size_mib=128)
        put("configure boot-source", api.boot, "put", kernel_image_path=os.path.abspath(args.kernel),
            boot_args="console=ttyS0 reboot=k panic=1")
        put("start InstanceStart", api.actions, "put", action_type="InstanceStart")
        if not seen.wait(STEP_TIMEOUT_S):
            raise Fail(f"InstanceStart: no {args.marker!r} on the VMM's stdout within "
                       f"{STEP_TIMEOUT_S:.0f} s")
        say(f"step start: guest wrote {args.marker!r} to its serial port")
        state = api.describe.get().json().get("state")
        if state != "Running":
            raise Fail(f"after InstanceStart, GET / says state={state!r}, want 'Running'")
        put("pause", api.vm, "patch", state="Paused")
        state = api.describe.get().json().get("state")
        if state != "Paused":
            raise Fail(f"after pause, GET / says state={state!r}, want 'Paused'")
        say("step pause: GET / says Paused")
        put("resume", api.vm, "patch", state="Resumed")
        state = api.describe.get().json().get("state")
        if state != "Running":
            raise Fail(f"after resume, GET / says state={state!r}, want 'Running'")
        say("step resume: GET / says Running")
        cfg = api.vm_config.get().json()
        say(f"step inspect: vm/config machine-config={cfg.get('machine-config')} "
            f"boot-source={cfg.get('boot-source')}")
        say(f"step inspect: version -> {api.version.get().json()}")
        api.close()
        api = None
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STEP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise Fail(f"still running {STEP_TIMEOUT_S:.0f} s after SIGTERM") from None
        say(f"step stop: SIGTERM -> exit status {code} after {(time.monotonic() - t) * 1e3:.1f} ms"
            + (" (killed by the signal: no handler)" if code == -signal.SIGTERM else ""))
        say("PASS")
        return 0
    except (Fail, APIError) as e:
        say(f"FAIL: {e}")
        if proc is not None:
            tail = bytes(out[-1500:]).decode(errors="replace").splitlines()[-10:]
            for line in tail:
                say(f"  vmm stdout: {line}")
            for line in bytes(err[-3000:]).decode(errors="replace").splitlines()[-15:]:
                say(f"  vmm stderr: {line}")
        return 1
    finally:
        if api is not None:
            api.close()
        stop()


def _installed(dist):
    from importlib.metadata import PackageNotFoundError, version
    try:
        version(dist)
        return True
    except PackageNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
