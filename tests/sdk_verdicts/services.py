#!/usr/bin/env python3
"""One service of the checkout shop for tests/sdk_verdicts.rs.

Each service is its own process with its own OpenTelemetry TracerProvider, a
distinct `service.name`, the SDK's default BatchSpanProcessor (5 s schedule
delay, as shipped) and the OTLP/HTTP protobuf exporter pointed at the daemon.
Trace context travels between the processes as a W3C `traceparent` header,
as between real services.

Roles (argv[1]):

  frontend   creates the root server span `POST /checkout` for every trace.
             Prints `ready ...`, then reads one more JSON line from stdin:
             {"traces": N, "interval_s": F, "violating": [i, ...],
              "payments": URL, "inventory": URL, "worker": URL | null}
             and for each trace calls payments and inventory (and the worker,
             if any) while its root span is open; the root ends last. Prints
             `trace HEX ok|violating start_ns=T` per trace (T: the root's
             start, unix nanoseconds; no span of the trace starts before it)
             and `done traces=N` after the provider has flushed and shut
             down.

  payments   answers POST /charge with a `charge card` span whose attribute
             `payment.charged` follows the `X-Charge` header: `true`, `false`
             or `missing` (attribute not set).
  inventory  answers POST /reserve with a `reserve stock` span.
  worker     answers POST /fulfil at once and creates a `fulfil order` span
             (a child of the caller's span) $SDK_VERDICTS_WORKER_DELAY_S
             seconds (default 20) later, as a queue consumer would.

  Every role prints `loaded` once imported and creates its provider when it
  reads `start` on stdin. The three servers then print `ready port=PORT ...`,
  serve until stdin closes, finish pending work, flush, and print
  `done spans=K`.

argv[2] is the daemon's OTLP/HTTP traces URL (http://HOST:PORT/v1/traces).
Every process exits on its own after MAX_LIFETIME_S, whatever happens.
"""

import json
import os
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

MAX_LIFETIME_S = 240
WORKER_DELAY_S = float(os.environ.get("SDK_VERDICTS_WORKER_DELAY_S", "20"))


def log(msg):
    print(msg, flush=True)


def watchdog():
    def expire():
        sys.stderr.write(f"services.py: still running after {MAX_LIFETIME_S} s; exiting\n")
        sys.stderr.flush()
        os._exit(3)

    t = threading.Timer(MAX_LIFETIME_S, expire)
    t.daemon = True
    t.start()


def make_provider(service, endpoint):
    # The test must exercise the SDK's defaults: refuse to run with the
    # batching overridden from the environment.
    for var in ("OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_SDK_DISABLED"):
        if var in os.environ:
            raise SystemExit(f"services.py: {var} is set; the test needs the SDK defaults")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
    provider.add_span_processor(processor)
    inner = getattr(processor, "_batch_processor", processor)
    delay = getattr(inner, "_schedule_delay_millis", None)
    if delay is None:
        delay = getattr(processor, "schedule_delay_millis", "unknown")
    return provider, provider.get_tracer("tracecheck-sdk-verdicts"), delay


# --------------------------------------------------------------------------
# frontend


def frontend(endpoint):
    provider, tracer, delay = make_provider("frontend", endpoint)
    log(f"ready delay_ms={delay}")
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("services.py frontend: stdin closed before the plan arrived")
    plan = json.loads(line)
    violating = set(plan["violating"])
    # Loopback only: never through a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(url, extra):
        headers = dict(extra)
        propagate.inject(headers)  # traceparent of the current (root) span
        req = urllib.request.Request(url, data=b"", headers=headers, method="POST")
        with opener.open(req, timeout=10) as resp:
            if resp.status // 100 != 2:
                raise RuntimeError(f"{url} answered {resp.status}")
            resp.read()

    start = time.monotonic()
    for i in range(plan["traces"]):
        # Paced from the start, so the run spans several export periods.
        pause = start + i * plan["interval_s"] - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        bad = i in violating
        charge = ("false" if i % 2 == 0 else "missing") if bad else "true"
        with tracer.start_as_current_span("POST /checkout", kind=trace.SpanKind.SERVER) as root:
            root.set_attribute("http.request.method", "POST")
            root.set_attribute("http.route", "/checkout")
            root.set_attribute("checkout.index", i)
            call(plan["payments"], {"X-Charge": charge})
            call(plan["inventory"], {})
            if plan.get("worker"):
                call(plan["worker"], {})
            root.set_attribute("http.response.status_code", 200)
            trace_id = format(root.get_span_context().trace_id, "032x")
            started_ns = root.start_time  # unix nanoseconds, the trace's first span
        # The root ended last, after every child above.
        log(f"trace {trace_id} {'violating' if bad else 'ok'} start_ns={started_ns}")
    provider.shutdown()  # exports what is still queued
    log(f"done traces={plan['traces']}")


# --------------------------------------------------------------------------
# payments, inventory, worker


class Service:
    def __init__(self, role, endpoint):
        self.role = role
        self.provider, self.tracer, self.delay = make_provider(role, endpoint)
        self.spans = 0
        self.lock = threading.Lock()
        self.pending = []

    def count(self):
        with self.lock:
            self.spans += 1

    def charge(self, headers):
        ctx = propagate.extract(headers)
        with self.tracer.start_as_current_span("charge card", context=ctx, kind=trace.SpanKind.SERVER) as span:
            mode = headers.get("x-charge", "true")
            if mode != "missing":
                span.set_attribute("payment.charged", mode == "true")
            span.set_attribute("payment.amount", 42)
            time.sleep(0.002)
        self.count()

    def reserve(self, headers):
        ctx = propagate.extract(headers)
        with self.tracer.start_as_current_span("reserve stock", context=ctx, kind=trace.SpanKind.SERVER) as span:
            span.set_attribute("inventory.items", 3)
            time.sleep(0.002)
        self.count()

    def fulfil(self, headers):
        ctx = propagate.extract(headers)

        def later():
            with self.tracer.start_as_current_span("fulfil order", context=ctx, kind=trace.SpanKind.CONSUMER):
                time.sleep(0.002)
            self.count()

        timer = threading.Timer(WORKER_DELAY_S, later)
        with self.lock:
            self.pending.append(timer)
        timer.start()

    def finish(self):
        with self.lock:
            pending = list(self.pending)
        for t in pending:
            t.join(WORKER_DELAY_S + 30)
        self.provider.shutdown()  # exports what is still queued


def serve(role, endpoint):
    service = Service(role, endpoint)
    routes = {
        "payments": ("/charge", service.charge, 200),
        "inventory": ("/reserve", service.reserve, 200),
        "worker": ("/fulfil", service.fulfil, 202),
    }
    path, work, status = routes[role]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if self.path != path:
                self.send_error(404)
                return
            try:
                # Lower-case keys: propagators look up `traceparent`.
                work({k.lower(): v for k, v in self.headers.items()})
            except Exception as e:  # reported to the caller, which fails the run
                self.send_error(500, str(e))
                return
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log(f"ready port={server.server_address[1]} delay_ms={service.delay}")
    # Serve until the test closes stdin.
    while sys.stdin.readline():
        pass
    server.shutdown()
    service.finish()
    log(f"done spans={service.spans}")


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("frontend", "payments", "inventory", "worker"):
        raise SystemExit("usage: services.py frontend|payments|inventory|worker OTLP_HTTP_TRACES_URL")
    watchdog()
    role, endpoint = sys.argv[1], sys.argv[2]
    # Imports done. The provider (and with it the export timer) starts on
    # the test's word, so the services' timers are out of phase by design,
    # whatever the interpreter's start-up time.
    log("loaded")
    if sys.stdin.readline().strip() != "start":
        raise SystemExit(f"services.py {role}: expected `start` on stdin")
    if role == "frontend":
        frontend(endpoint)
    else:
        serve(role, endpoint)


if __name__ == "__main__":
    main()
