"""Pokeshop: a small instrumented HTTP service to try tracecheck's test runner on.

It keeps pokemon in memory and has an asynchronous step like the real
Pokeshop's import: POST /pokemon/import answers 202 at once and puts a
message on a queue; a worker thread consumes it later, in a span of the same
trace (the trace context travels in the message).

    POST /pokemon           {"name": "pikachu", "type": "electric"} -> 201 {"id": 1, ...}
    GET  /pokemon/{id}      -> 200 the pokemon, 404 if unknown
    POST /pokemon/import    {"id": 1} -> 202; the worker imports it
    GET  /stats             uninstrumented: answers, but sends no span

Environment:
    PORT                          listen port (default 8080)
    OTEL_EXPORTER_OTLP_ENDPOINT   where spans go (default http://localhost:4318)
    POKESHOP_BUG=1                the deliberate bug: GET /pokemon/{id} answers 500
    IMPORT_DELAY_MS               how long the worker takes to pick a message up (default 300)

Needs: pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
"""

import json
import os
import queue
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

BUG = os.environ.get("POKESHOP_BUG", "") not in ("", "0", "false")
IMPORT_DELAY = int(os.environ.get("IMPORT_DELAY_MS", "300")) / 1000.0
ENDPOINT = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318").rstrip("/")

provider = TracerProvider(resource=Resource.create({"service.name": "pokeshop"}))
# Short delay: a test waits for these spans.
provider.add_span_processor(
    BatchSpanProcessor(OTLPSpanExporter(endpoint=ENDPOINT + "/v1/traces"), schedule_delay_millis=100)
)
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("pokeshop")

pokemon = {}
pokemon_lock = threading.Lock()
next_id = [1]
imports = queue.Queue()


def worker():
    while True:
        carrier, pokemon_id = imports.get()
        time.sleep(IMPORT_DELAY)
        ctx = propagate.extract(carrier)
        with tracer.start_as_current_span("import pokemon", context=ctx, kind=SpanKind.CONSUMER) as span:
            span.set_attribute("messaging.system", "memory")
            span.set_attribute("messaging.operation", "process")
            span.set_attribute("messaging.destination.name", "imports")
            span.set_attribute("pokemon.id", pokemon_id)
            with tracer.start_as_current_span("db update pokemon") as db:
                db.set_attribute("db.system", "memory")
                db.set_attribute("db.operation", "UPDATE")
                with pokemon_lock:
                    p = pokemon.get(pokemon_id)
                    if p is not None:
                        p["imported"] = True
                db.set_attribute("db.rows_affected", 0 if p is None else 1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw or b"{}")

    def server_span(self, route):
        ctx = propagate.extract(dict(self.headers.items()))
        span = tracer.start_span(f"{self.command} {route}", context=ctx, kind=SpanKind.SERVER)
        span.set_attribute("http.request.method", self.command)
        span.set_attribute("http.route", route)
        span.set_attribute("url.path", self.path)
        return span

    def do_GET(self):
        if self.path == "/stats":
            # Deliberately uninstrumented.
            with pokemon_lock:
                return self.answer(200, {"pokemon": len(pokemon)})
        m = re.fullmatch(r"/pokemon/(\d+)", self.path)
        if not m:
            return self.answer(404, {"error": "not found"})
        span = self.server_span("/pokemon/{id}")
        with trace.use_span(span, end_on_exit=True):
            pid = int(m.group(1))
            span.set_attribute("pokemon.id", pid)
            with tracer.start_as_current_span("db select pokemon") as db:
                db.set_attribute("db.system", "memory")
                db.set_attribute("db.operation", "SELECT")
                with pokemon_lock:
                    p = dict(pokemon[pid]) if pid in pokemon else None
            if BUG:
                span.set_status(Status(StatusCode.ERROR, "cache corrupted"))
                status, body = 500, {"error": "cache corrupted"}
            elif p is None:
                status, body = 404, {"error": f"no pokemon {pid}"}
            else:
                status, body = 200, p
            span.set_attribute("http.response.status_code", status)
            self.answer(status, body)

    def do_POST(self):
        if self.path == "/pokemon":
            span = self.server_span("/pokemon")
            with trace.use_span(span, end_on_exit=True):
                req = self.read_json()
                with tracer.start_as_current_span("db insert pokemon") as db:
                    db.set_attribute("db.system", "memory")
                    db.set_attribute("db.operation", "INSERT")
                    with pokemon_lock:
                        pid = next_id[0]
                        next_id[0] += 1
                        p = {"id": pid, "name": req.get("name", ""), "type": req.get("type", ""), "imported": False}
                        pokemon[pid] = p
                    db.set_attribute("pokemon.id", pid)
                span.set_attribute("pokemon.id", pid)
                span.set_attribute("pokemon.name", p["name"])
                span.set_attribute("http.response.status_code", 201)
                return self.answer(201, p)
        if self.path == "/pokemon/import":
            span = self.server_span("/pokemon/import")
            with trace.use_span(span, end_on_exit=True):
                pid = int(self.read_json().get("id", 0))
                span.set_attribute("pokemon.id", pid)
                with tracer.start_as_current_span("enqueue import", kind=SpanKind.PRODUCER) as q:
                    q.set_attribute("messaging.system", "memory")
                    q.set_attribute("messaging.operation", "publish")
                    q.set_attribute("messaging.destination.name", "imports")
                    carrier = {}
                    propagate.inject(carrier)
                    imports.put((carrier, pid))
                span.set_attribute("http.response.status_code", 202)
                return self.answer(202, {"id": pid, "status": "queued"})
        self.answer(404, {"error": "not found"})


def main():
    port = int(os.environ.get("PORT", "8080"))
    threading.Thread(target=worker, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)

    def stop(*_):
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"pokeshop listening on http://127.0.0.1:{port} (bug {'on' if BUG else 'off'}), spans to {ENDPOINT}", flush=True)
    server.serve_forever()
    provider.shutdown()


if __name__ == "__main__":
    sys.exit(main())
