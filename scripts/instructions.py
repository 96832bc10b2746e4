#!/usr/bin/env python3
"""Instructions per proxied request, counted by valgrind's callgrind: the stable measure of
the request path's cost on a noisy machine (docs/benchmarks.md, "The relay without a task
hand-over"). Starts the mock upstream and ccflare-server under callgrind with instrumentation
off, warms up with 20 requests, counts N sequential requests on one keep-alive connection, and
prints the instructions per request (every thread of the server, the writer's included).
Work the server does on a timer whatever the traffic (the account sync, once a second) is
counted over five idle seconds first and taken off in proportion to the measured run's
length, so a slower run (a loaded machine) does not read as a costlier request.

    cargo build --release -p ccflare-server -p ccflare-mock
    scripts/instructions.py target/release/ccflare-server json 200
    scripts/instructions.py /tmp/old/ccflare-server stream 200

Needs valgrind (Debian: valgrind). Kernel time (syscalls, wake-ups) is not counted: the
bench's CPU seconds per 1,000 requests cover that.
"""
import glob, http.client, json, os, re, socket, subprocess, sys, tempfile, time

server, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
mock_bin = os.environ.get("CCFLARE_MOCK_BIN", os.path.join(root, "target/release/ccflare-mock"))
out = tempfile.mkdtemp(prefix="ccflare-instructions-")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


mock_port = free_port()
mock = subprocess.Popen([mock_bin, "--port", str(mock_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
# callgrind_control finds the server by user and host names: both sides must agree.
names = {"USER": "root", "HOST": "127.0.0.1"}
env = {"PATH": os.environ["PATH"], "HOME": out, "PORT": "0", "DATABASE_URL": out + "/bench.db",
       "CLAUDE_API_KEYS": "sk-ant-api03-bench-a-0123456789abcdefghijklmnop",
       "CCFLARE_UPSTREAM_URL": f"http://127.0.0.1:{mock_port}", **names}
profile = out + "/callgrind.out"
srv = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={profile}", server],
                       env=env, cwd=out, stdout=subprocess.PIPE, stderr=open(out + "/server.log", "w"), text=True)
url = None
for line in srv.stdout:
    m = re.search(r"ANTHROPIC_BASE_URL=(\S+)", line)
    if m:
        url = m.group(1)
        break
if url is None:
    sys.exit(f"the server did not start; see {out}/server.log")
port = int(url.rsplit(":", 1)[1])
body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 1024, "stream": kind == "stream",
                   "system": "You are a concise assistant that answers engineering questions.",
                   "messages": [{"role": "user", "content": "Summarise open-loop load generation. " * 12}]})
headers = {"x-api-key": "client", "anthropic-version": "2023-06-01", "content-type": "application/json",
           # 14 words: the mock streams 20 events (ccflare-bench's stream scenario).
           "x-mock-text": "The quick brown fox jumps over the lazy dog while five wizards box quickly."}
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)


def send(count):
    for _ in range(count):
        conn.request("POST", "/v1/messages", body, headers)
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200, (response.status, data[:200])


control = {**os.environ, **names}


def callgrind(*args):
    subprocess.run(["callgrind_control", *args, str(srv.pid)], env=control, stdout=subprocess.DEVNULL, check=True)


def totals():
    """Instructions of each dump so far, in order."""
    parts = []
    for path in glob.glob(profile + "*"):
        part = int(path.rsplit(".", 1)[1]) if re.search(r"\.\d+$", path) else 10**9
        for line in open(path, errors="replace"):
            if line.startswith("totals:"):
                parts.append((part, int(line.split()[1])))
    return [total for _, total in sorted(parts)]


send(20)
IDLE_S = 5.0
callgrind("-i", "on")
time.sleep(IDLE_S)  # measuring the idle background, not waiting for something
callgrind("-d")
started = time.monotonic()
send(n)
elapsed = time.monotonic() - started
callgrind("-i", "off")
srv.terminate()
srv.wait()
mock.terminate()
mock.wait()
idle, busy = totals()[:2]
background = idle / IDLE_S * elapsed
per_request = (busy - background) / n
print(f"{kind}: {per_request:,.0f} instructions per request ({n} requests in {elapsed:.1f} s; "
      f"background {idle / IDLE_S:,.0f}/s taken off; profile: {profile})")
