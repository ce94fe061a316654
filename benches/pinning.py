"""Issue 18's measurement: 80 OTLP/HTTP requests of ~4 MiB, 4 a second, each
carrying one span of a long-lived trace (no root, a span in every request)
among ~18 000 one-span traces; beside them, from a second sender, OTLP/JSON
requests of ~1 MiB, 4 a second; `assembler.max_memory_mib: 128`, no models,
no forwarding. Prints what was taken and refused, the daemon's peak RSS,
and the peak of its memory account (`tracecheck_memory_bytes`, summed over
its parts, sampled every 50 ms; 0 where the build has no account).

Usage: python3 benches/pinning.py path/to/tracecheck HTTP_PORT ADMIN_PORT
(needs the opentelemetry-proto package; .ci/run installs it). Writes its
config and the daemon's log under /tmp/tracecheck-pinning/."""
import json, os, random, subprocess, sys, threading, time, urllib.request
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.trace.v1 import trace_pb2 as tr
from opentelemetry.proto.resource.v1 import resource_pb2 as rs
from opentelemetry.proto.common.v1 import common_pb2 as cm

binary, http_port, admin_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
WORK = "/tmp/tracecheck-pinning"
os.makedirs(WORK, exist_ok=True)
cfg = f"""receivers:
  otlp:
    http: {{ endpoint: "127.0.0.1:{http_port}" }}
assembler:
  max_memory_mib: 128
admin:
  endpoint: "127.0.0.1:{admin_port}"
"""
open(os.path.join(WORK, "config.yaml"), "w").write(cfg)
proc = subprocess.Popen([binary, "serve", "--config", os.path.join(WORK, "config.yaml")],
                        stdout=open(os.path.join(WORK, "daemon.log"), "w"), stderr=subprocess.STDOUT)
def get(path):
    return urllib.request.urlopen(f"http://127.0.0.1:{admin_port}{path}", timeout=5).read().decode()
for _ in range(100):
    try:
        get("/readyz"); break
    except Exception:
        time.sleep(0.1)
def rss():
    for l in open(f"/proc/{proc.pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) // 1024
def hwm():
    for l in open(f"/proc/{proc.pid}/status"):
        if l.startswith("VmHWM"):
            return int(l.split()[1]) // 1024
def metric(name):
    for l in get("/metrics").splitlines():
        if l.startswith(name + " "):
            return float(l.split()[1])
    return float("nan")
def account():
    return sum(float(l.split()[1]) for l in get("/metrics").splitlines()
               if l.startswith("tracecheck_memory_bytes{"))

long_trace = os.urandom(16)
rnd = random.Random(7)
now = time.time_ns()
def request(i):
    req = ts.ExportTraceServiceRequest()
    r = req.resource_spans.add()
    r.resource.attributes.add(key="service.name", value=cm.AnyValue(string_value="svc"))
    ss = r.scope_spans.add()
    ss.spans.add(trace_id=long_trace, span_id=os.urandom(8), parent_span_id=os.urandom(8),
                 name="long-lived step", start_time_unix_nano=now, end_time_unix_nano=now + 1000)
    while True:
        for _ in range(1000):
            ss.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="short " + "x" * 150,
                         start_time_unix_nano=now, end_time_unix_nano=now + 1000)
        if req.ByteSize() >= 4 * 1024 * 1024 - 300_000:
            return req.SerializeToString()
bodies = [request(i) for i in range(4)]  # reused bodies differ only by trace ids: fine

def json_body():
    spans = [{"traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(), "name": "json step",
              "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000),
              "attributes": [{"key": f"k{a}", "value": {"stringValue": "v" * 8}} for a in range(8)]}
             for _ in range(2500)]
    return json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "json-svc"}}]},
        "scopeSpans": [{"spans": spans}]}]}).encode()
json_stats = {"taken": 0, "refused": 0}
done = threading.Event()
def send_json():
    body = json_body()
    while not done.is_set():
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/traces", data=body,
                                   headers={"Content-Type": "application/json"}), timeout=30).read()
            json_stats["taken"] += 1
        except urllib.error.HTTPError:
            json_stats["refused"] += 1
        except Exception:
            json_stats["errors"] = json_stats.get("errors", 0) + 1
        time.sleep(0.25)
peaks = {"account": 0.0}
def sample():
    while not done.is_set():
        try:
            peaks["account"] = max(peaks["account"], account())
        except Exception:
            pass
        time.sleep(0.05)
threads = [threading.Thread(target=send_json), threading.Thread(target=sample)]
for t in threads:
    t.start()
rss0 = rss()
taken = refused = 0
peak = 0
for i in range(80):
    body = bodies[i % 4]
    # a fresh span of the long-lived trace in each request
    rq = ts.ExportTraceServiceRequest.FromString(body)
    rq.resource_spans[0].scope_spans[0].spans[0].span_id = os.urandom(8)
    for s in rq.resource_spans[0].scope_spans[0].spans[1:]:
        s.trace_id = os.urandom(16)
    data = rq.SerializeToString()
    try:
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/traces", data=data,
                               headers={"Content-Type": "application/x-protobuf"}), timeout=30).read()
        taken += 1
    except urllib.error.HTTPError as e:
        refused += 1
    peak = max(peak, rss())
    time.sleep(0.25)
done.set()
for t in threads:
    t.join()
print(f"protobuf requests {len(data)} B each: taken {taken}, refused {refused}; "
      f"JSON requests {len(json_body())} B each: taken {json_stats['taken']}, refused {json_stats['refused']}, "
      f"failed {json_stats.get('errors', 0)}; "
      f"RSS before {rss0} MiB, peak (VmHWM) {hwm()} MiB; memory account peak {peaks['account']/2**20:.1f} MiB "
      f"of 128; buffer account at end {metric('tracecheck_buffer_bytes')/1e6:.1f} MB, "
      f"buffered spans {metric('tracecheck_buffer_spans'):.0f}")
proc.terminate(); proc.wait()
