//! The memory account charges an OTLP/JSON body `json::decode_cost` before
//! decoding it (`receiver::http`). This measures what decoding really
//! takes, with an allocator that counts, on the load generator's traffic,
//! on the densest JSON and on lists of the smallest elements there are, so
//! the charge cannot silently fall below the truth.
//! One test: the allocator's counts are process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tracecheck::bench::traffic::{Rng, TrafficGenerator, TrafficMix};
use tracecheck::otlp::json;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Decodes `body` as the receiver does (decode, then encode once as
/// protobuf for everything after it), and checks that what it took at its
/// peak is within what `json::decode_cost` charges for it.
fn decodes_within_its_charge(what: &str, body: &[u8]) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let encoded = json::decode_export_request(body).map(|d| prost::Message::encode_to_vec(&d));
    let peak = PEAK.load(Ordering::Relaxed) - before;
    drop(encoded);
    let charged = json::decode_cost(body);
    let ratio = peak as f64 / body.len() as f64;
    eprintln!(
        "{what}: body {} bytes, decode peaked at {peak} bytes ({ratio:.1}x), charged {charged}",
        body.len()
    );
    assert!(
        peak <= charged,
        "{what}: decoding {} bytes of JSON took {peak} bytes ({ratio:.1}x), more than the {charged} charged",
        body.len()
    );
}

#[test]
fn decoding_json_takes_less_than_what_is_charged_for_it() {
    let mut generator = TrafficGenerator::new(TrafficMix::default(), Rng::new(7));
    for spans in [50, 2_000, 16_000] {
        let body = json::encode_export_request(&generator.next_batch(spans).request);
        decodes_within_its_charge(&format!("{spans} generated spans"), body.as_bytes());
    }
    decodes_within_its_charge("dense attributes", dense_attributes().as_bytes());
    decodes_within_its_charge("an array of zeros", &array_of_zeros());
    for (what, head, item, tail) in EMPTY_ELEMENTS {
        let body = repeated(head, item, tail, (1 << 17) + 1);
        decodes_within_its_charge(what, &body);
    }
}

/// Lists of the smallest elements that decode into something: the most
/// the decoded request can take for a byte of body (a span is 264 bytes
/// for the three of `{},`, and its list doubles as it grows). One element
/// past a power of two, when the list has just moved and both its old and
/// its new buffer are live.
const EMPTY_ELEMENTS: [(&str, &str, &str, &str); 6] = [
    ("empty resource spans", r#"{"resourceSpans":["#, "{}", "]}"),
    (
        "empty spans",
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":["#,
        "{}",
        "]}]}]}",
    ),
    (
        "empty events",
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"events":["#,
        "{}",
        "]}]}]}]}",
    ),
    (
        "empty attributes",
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":["#,
        "{}",
        "]}]}]}]}",
    ),
    (
        "empty array values",
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"value":{"arrayValue":{"values":["#,
        "{}",
        "]}}}]}]}]}]}",
    ),
    (
        "empty id keys",
        r#"{"resourceSpans":[{"resource":{"entityRefs":[{"idKeys":["#,
        r#""""#,
        "]}]}}]}",
    ),
];

fn repeated(head: &str, item: &str, tail: &str, count: usize) -> Vec<u8> {
    let mut body = head.as_bytes().to_vec();
    for i in 0..count {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item.as_bytes());
    }
    body.extend_from_slice(tail.as_bytes());
    body
}

/// The densest JSON senders write: many short attributes a span, every
/// value a small object of its own.
fn dense_attributes() -> String {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    let attributes: Vec<KeyValue> = (0..64)
        .map(|i| KeyValue {
            key: format!("k{i}"),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(i)),
            }),
            ..Default::default()
        })
        .collect();
    let spans = (0..2_000u64)
        .map(|i| Span {
            trace_id: [1; 16].to_vec(),
            span_id: i.to_be_bytes().to_vec(),
            name: "s".into(),
            attributes: attributes.clone(),
            ..Default::default()
        })
        .collect();
    json::encode_export_request(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// Not OTLP: what a sender that means harm would send to a decoder that
/// parsed the body into a tree before looking at it. Now the first zero is
/// an error and the rest is only parsed.
fn array_of_zeros() -> Vec<u8> {
    let mut body = b"{\"resourceSpans\":[".to_vec();
    for i in 0..1_000_000 {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'0');
    }
    body.extend_from_slice(b"]}");
    body
}
