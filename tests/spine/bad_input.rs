//! Every kind of bad input gets the OTLP spec's answer, is counted by reason
//! on `/metrics`, and leaves the daemon taking good requests.

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use tonic::codec::CompressionEncoding;
use tonic::Code;
use tonic_types::StatusExt as _;
use tracecheck::bench::sink::{Faults, SinkHandle};

use crate::util::{self, grpc_client, post, RpcStatus, TestDaemon};

const MIB: usize = 1024 * 1024;
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// Not an `ExportTraceServiceRequest`: field 1 (`resource_spans`, a
/// length-delimited message) arrives as a 64-bit integer.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(fixed64, tag = "1")]
    resource_spans: u64,
}

/// Field 1 has the right wire type but its content is not a `ResourceSpans`.
#[derive(Clone, PartialEq, prost::Message)]
struct JunkResourceSpans {
    #[prost(bytes = "vec", repeated, tag = "1")]
    resource_spans: Vec<Vec<u8>>,
}

/// A 1 MiB limit on both transports, so oversized requests stay small.
async fn start() -> (TestDaemon, SinkHandle) {
    let sink = util::start_sink(Faults::default()).await;
    let mut config = util::config_forwarding_to(&sink);
    if let Some(g) = config.receivers.otlp.grpc.as_mut() {
        g.max_recv_msg_size_mib = 1;
    }
    if let Some(h) = config.receivers.otlp.http.as_mut() {
        h.max_request_body_size_mib = 1;
    }
    (util::start_daemon(config).await, sink)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts a protobuf error answer: status, `google.rpc.Status` body with
/// the gRPC code and a message.
async fn assert_rpc_status(resp: reqwest::Response, status: StatusCode, code: i32) -> String {
    assert_eq!(resp.status(), status);
    assert_eq!(content_type(&resp), PROTOBUF);
    let body = resp.bytes().await.expect("body");
    let s = RpcStatus::decode(body).expect("body is a google.rpc.Status");
    assert_eq!(s.code, code, "{s:?}");
    assert!(!s.message.is_empty(), "{s:?}");
    s.message
}

/// One span with a string attribute of `bytes` bytes.
fn request_with_blob(bytes: usize, seed: u64) -> ExportTraceServiceRequest {
    let mut req = util::request_of(1, seed);
    spans_mut(&mut req)[0].attributes.push(KeyValue {
        key: "blob".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("a".repeat(bytes))),
        }),
        ..Default::default()
    });
    req
}

fn spans_mut(req: &mut ExportTraceServiceRequest) -> Vec<&mut Span> {
    req.resource_spans
        .iter_mut()
        .flat_map(|rs| &mut rs.scope_spans)
        .flat_map(|ss| &mut ss.spans)
        .collect()
}

/// Sends any prost message to the OTLP export method.
async fn grpc_raw<M: prost::Message + Default + Send + Sync + 'static>(
    daemon: &TestDaemon,
    message: M,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(util::grpc_endpoint(daemon))
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let codec = tonic_prost::ProstCodec::<M, ExportTraceServiceResponse>::default();
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(tonic::Request::new(message), path, codec)
        .await
        .map(tonic::Response::into_inner)
}

/// Sends one hand-made gRPC frame (compression flag, length, `payload`) to
/// the OTLP export method, declaring gzip; returns the `grpc-status`.
async fn grpc_frame(daemon: &TestDaemon, compressed: bool, payload: &[u8]) -> String {
    let channel = tonic::transport::Endpoint::from_shared(util::grpc_endpoint(daemon))
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connect");
    let mut frame = vec![u8::from(compressed)];
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("len").to_be_bytes());
    frame.extend_from_slice(payload);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!(
            "{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            util::grpc_endpoint(daemon)
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", "gzip")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(frame),
        )))
        .expect("request");
    let resp = tower::ServiceExt::oneshot(channel, req)
        .await
        .expect("HTTP/2 answer");
    // Refused before the service ran: a trailers-only answer.
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned()
}

fn refused(text: &str, transport: &str, reason: &str) -> f64 {
    util::sample(
        text,
        "tracecheck_receiver_refused_requests_total",
        &[("transport", transport), ("reason", reason)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refusals_carry_their_status_and_the_daemon_goes_on() {
    let (daemon, sink) = start().await;

    // Not protobuf at all.
    let resp = post(&daemon, PROTOBUF, false, vec![0xff; 64]).await;
    let msg = assert_rpc_status(resp, StatusCode::BAD_REQUEST, 3).await;
    assert!(msg.contains("protobuf"), "{msg}");

    // Truncated JSON: 400, answered in JSON.
    let resp = post(&daemon, JSON, false, br#"{"resourceSpans": ["#.to_vec()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(content_type(&resp), JSON);
    let body: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("JSON error body");
    assert_eq!(body["code"], 3, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );

    // Says gzip, is not.
    let resp = post(&daemon, PROTOBUF, true, b"\x1f\x8bnot gzip at all".to_vec()).await;
    assert_rpc_status(resp, StatusCode::BAD_REQUEST, 3).await;

    // Neither protobuf nor JSON.
    let resp = post(&daemon, "text/plain", false, b"hello".to_vec()).await;
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Over max_request_body_size_mib as sent.
    let resp = post(&daemon, PROTOBUF, false, vec![0; MIB + 1024]).await;
    assert_rpc_status(resp, StatusCode::PAYLOAD_TOO_LARGE, 8).await;

    // A gzip bomb: 6 KiB on the wire, 8 MiB inflated.
    let bomb = gzip(&vec![0; 8 * MIB]);
    assert!(bomb.len() < 64 * 1024);
    let resp = post(&daemon, PROTOBUF, true, bomb.clone()).await;
    assert_rpc_status(resp, StatusCode::PAYLOAD_TOO_LARGE, 8).await;

    // The same bomb with a trailer that says it inflates to 100 bytes: what
    // is reserved and inflated goes by the trailer, so it is found out at
    // 100 bytes, and stopped again at the body limit.
    let mut liar = bomb;
    let at = liar.len() - 4;
    liar[at..].copy_from_slice(&100u32.to_le_bytes());
    let resp = post(&daemon, PROTOBUF, true, liar).await;
    assert_rpc_status(resp, StatusCode::PAYLOAD_TOO_LARGE, 8).await;

    // Two members, the last empty, so the trailer says 0: taken whole.
    let mut two = gzip(&util::request_of(40, 3).encode_to_vec());
    two.extend(gzip(b""));
    let resp = post(&daemon, PROTOBUF, true, two).await;
    assert_eq!(resp.status(), StatusCode::OK);

    // Still taking good requests, plain and gzipped, and forwarding them.
    let good = util::request_of(40, 1).encode_to_vec();
    let resp = post(&daemon, PROTOBUF, false, good).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(content_type(&resp), PROTOBUF);
    let good = gzip(&util::request_of(40, 2).encode_to_vec());
    let resp = post(&daemon, PROTOBUF, true, good).await;
    assert_eq!(resp.status(), StatusCode::OK);
    util::wait_for_sink(&sink, 120).await;

    let text = util::scrape(daemon.admin_addr).await;
    assert_eq!(refused(&text, "http", "malformed"), 3.0, "{text}");
    assert_eq!(refused(&text, "http", "unsupported_media_type"), 1.0);
    assert_eq!(refused(&text, "http", "too_large"), 3.0);
    assert_eq!(
        util::sample(
            &text,
            "tracecheck_receiver_accepted_spans_total",
            &[("transport", "http")]
        ),
        120.0
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refusals_carry_their_code_and_the_daemon_goes_on() {
    let (daemon, sink) = start().await;

    // Garbage where the request should be, and garbage inside it.
    let err = grpc_raw(&daemon, WrongWireType { resource_spans: 7 })
        .await
        .expect_err("garbage refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = grpc_raw(
        &daemon,
        JunkResourceSpans {
            resource_spans: vec![vec![0xff; 32]],
        },
    )
    .await
    .expect_err("junk refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Says gzip, is not.
    let code = grpc_frame(&daemon, true, b"\x1f\x8bnot gzip at all").await;
    assert_eq!(code, (Code::InvalidArgument as i32).to_string());

    // Over max_recv_msg_size_mib: RESOURCE_EXHAUSTED without retry info, so
    // that the sender drops it rather than retrying forever.
    let mut client = grpc_client(&daemon).await;
    let err = client
        .export(request_with_blob(MIB + 1024, 3))
        .await
        .expect_err("oversized refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.get_details_retry_info().is_none(), "{err:?}");

    // A gzip bomb: small compressed, past the limit once inflated.
    let mut gz = grpc_client(&daemon)
        .await
        .send_compressed(CompressionEncoding::Gzip);
    let err = gz
        .export(request_with_blob(8 * MIB, 4))
        .await
        .expect_err("gzip bomb refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.get_details_retry_info().is_none(), "{err:?}");

    // Still taking good requests, plain and gzipped.
    let ok = client
        .export(util::request_of(40, 5))
        .await
        .expect("good request");
    assert_eq!(ok.into_inner().partial_success, None);
    gz.export(util::request_of(40, 6))
        .await
        .expect("good gzipped request");
    util::wait_for_sink(&sink, 80).await;

    let text = util::scrape(daemon.admin_addr).await;
    assert_eq!(refused(&text, "grpc", "malformed"), 3.0, "{text}");
    assert_eq!(refused(&text, "grpc", "too_large"), 2.0, "{text}");
    assert_eq!(
        util::sample(
            &text,
            "tracecheck_receiver_accepted_spans_total",
            &[("transport", "grpc")]
        ),
        80.0
    );
    daemon.shutdown().await;
}

/// Three spans: the first good, the second with a 15-byte trace ID, the
/// third with a 7-byte span ID.
fn request_with_bad_ids(seed: u64) -> ExportTraceServiceRequest {
    let mut req = util::request_of(3, seed);
    let mut spans = spans_mut(&mut req);
    spans[1].trace_id.truncate(15);
    spans[2].span_id.truncate(7);
    req
}

const BAD_IDS_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-client"}}]},"scopeSpans":[{"scope":{"name":"spine"},"spans":[
 {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"good","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000100000000"},
 {"traceId":"5b8efff798038103d269b633813fc6","spanId":"eee19b7ec3c1b175","name":"short trace id","kind":1,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000100000000"},
 {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b1","name":"short span id","kind":1,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000100000000"}
]}]}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_are_rejected_through_partial_success_and_the_rest_forwarded() {
    let (daemon, sink) = start().await;

    // HTTP/protobuf: a protobuf answer.
    let resp = post(
        &daemon,
        PROTOBUF,
        false,
        request_with_bad_ids(10).encode_to_vec(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(content_type(&resp), PROTOBUF);
    let answer = ExportTraceServiceResponse::decode(resp.bytes().await.expect("body"))
        .expect("protobuf answer");
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(!partial.error_message.is_empty());

    // HTTP/JSON: a JSON answer.
    let resp = post(&daemon, JSON, false, BAD_IDS_JSON.as_bytes().to_vec()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(content_type(&resp), JSON);
    let answer: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("JSON answer");
    let rejected = &answer["partialSuccess"]["rejectedSpans"];
    assert!(*rejected == 2 || *rejected == "2", "{answer}");
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{answer}"
    );

    // gRPC.
    let answer = grpc_client(&daemon)
        .await
        .export(request_with_bad_ids(11))
        .await
        .expect("partially accepted")
        .into_inner();
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(!partial.error_message.is_empty());

    // The good span of each request went downstream, the bad ones did not.
    let stats = util::wait_for_sink(&sink, 3).await;
    assert_eq!(stats.invalid_id_spans, 0, "{stats}");
    assert_eq!(stats.spans, 3, "{stats}");

    let text = util::scrape(daemon.admin_addr).await;
    let invalid = |transport| {
        util::sample(
            &text,
            "tracecheck_receiver_refused_spans_total",
            &[("transport", transport), ("reason", "invalid_id")],
        )
    };
    assert_eq!(invalid("http"), 4.0, "{text}");
    assert_eq!(invalid("grpc"), 2.0, "{text}");
    assert_eq!(
        util::sample(&text, "tracecheck_receiver_accepted_spans_total", &[]),
        3.0
    );
    daemon.shutdown().await;
}
