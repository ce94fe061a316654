//! The `grpc` trigger: calls any unary method without generated code. The
//! service is described by the test's `protobufFile` (compiled here with
//! protox, no `protoc`) or, without one, by the server's reflection
//! service; the request JSON becomes a dynamic message (prost-reflect).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use bytes::Buf;
use prost::Message as _;
use prost_reflect::prost_types::FileDescriptorProto;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as V1AlphaClient;

use super::context::RunContext;
use super::propagation::Propagation;
use super::trigger::{auth_parts, error_chain, new_span_id, render, TriggerError};
use crate::engine::TriggerResponse;
use crate::ids::TraceId;
use crate::model::GrpcRequest;

/// Files fetched through reflection at most (a service and its imports).
const MAX_REFLECTED_FILES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("grpc {address}: {message}")]
    Call { address: String, message: String },
    #[error("protobufFile: {0}")]
    Proto(String),
    #[error("grpc method {method:?}: {message}")]
    Method { method: String, message: String },
    #[error("grpc request for {method}: {message}")]
    Request { method: String, message: String },
}

/// Calls the method; answers its description and the response (status =
/// the gRPC code, body = the response message as JSON, headers = the
/// response metadata).
pub(crate) async fn call(
    g: &GrpcRequest,
    trace_id: TraceId,
    propagation: &Propagation,
    ctx: &RunContext,
    base_dir: &Path,
    timeout: Duration,
) -> Result<(String, TriggerResponse), TriggerError> {
    let address = render(&g.address, ctx)?;
    let uri = if address.contains("://") {
        address.clone()
    } else {
        format!("http://{address}")
    };
    let call_err = |message: String| GrpcError::Call {
        address: address.clone(),
        message,
    };
    let (service, method_name) = split_method(&g.method).ok_or_else(|| GrpcError::Method {
        method: g.method.clone(),
        message: "expected package.Service/Method (or package.Service.Method)".into(),
    })?;
    // An https:// address trusts the system's CA certificates.
    let channel = crate::net::client::grpc_channel(&uri, None, "grpc trigger", |e| {
        e.connect_timeout(timeout).timeout(timeout)
    })
    .map_err(|e| call_err(e.to_string()))?;
    let pool = match &g.protobuf_file {
        Some(p) => compile_proto(p, base_dir)?,
        None => reflect(channel.clone(), &service)
            .await
            .map_err(|m| call_err(format!("server reflection: {m}")))?,
    };
    let method = find_method(&pool, &service, &method_name).ok_or_else(|| GrpcError::Method {
        method: g.method.clone(),
        message: format!("no method {method_name} in service {service}"),
    })?;
    let request_json = match &g.request {
        Some(t) => render(t, ctx)?,
        None => String::new(),
    };
    let message = if request_json.trim().is_empty() {
        DynamicMessage::new(method.input())
    } else {
        let mut de = serde_json::Deserializer::from_str(&request_json);
        DynamicMessage::deserialize(method.input(), &mut de).map_err(|e| GrpcError::Request {
            method: g.method.clone(),
            message: e.to_string(),
        })?
    };
    let mut request = tonic::Request::new(message);
    let md = request.metadata_mut();
    let mut put = |k: &str, v: &str| -> Result<(), TriggerError> {
        let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|_| {
            GrpcError::Request {
                method: g.method.clone(),
                message: format!("invalid metadata key {k:?}"),
            }
        })?;
        let value = MetadataValue::try_from(v).map_err(|_| GrpcError::Request {
            method: g.method.clone(),
            message: format!("invalid metadata value for {k:?}"),
        })?;
        md.insert(key, value);
        Ok(())
    };
    for h in &g.metadata {
        put(&h.key, &render(&h.value, ctx)?)?;
    }
    for (k, v) in auth_parts(g.auth.as_ref(), ctx)?.headers {
        put(&k, &v)?;
    }
    for (k, v) in propagation.headers(trace_id, new_span_id()) {
        put(k, &v)?;
    }

    let path = http::uri::PathAndQuery::try_from(format!("/{service}/{method_name}"))
        .map_err(|e| call_err(e.to_string()))?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| call_err(error_chain(&e)))?;
    let started = std::time::Instant::now();
    let codec = DynamicCodec {
        output: method.output(),
    };
    let description = format!("grpc {service}/{method_name} at {address}");
    let response = match client.unary(request, path, codec).await {
        Ok(resp) => {
            let headers = metadata_pairs(resp.metadata());
            let body = serde_json::to_string(resp.get_ref()).unwrap_or_default();
            TriggerResponse {
                status: 0,
                body,
                headers,
                duration: Some(started.elapsed()),
            }
        }
        // A gRPC error is an answer to assert on, not a failed trigger.
        Err(status) => TriggerResponse {
            status: status.code() as u16,
            body: status.message().to_string(),
            headers: metadata_pairs(status.metadata()),
            duration: Some(started.elapsed()),
        },
    };
    Ok((description, response))
}

fn metadata_pairs(md: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    md.clone()
        .into_headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// `pkg.Service/Method` or Tracetest's `pkg.Service.Method`.
fn split_method(m: &str) -> Option<(String, String)> {
    let m = m.trim().trim_start_matches('/');
    let (service, method) = m.rsplit_once('/').or_else(|| m.rsplit_once('.'))?;
    (!service.is_empty() && !method.is_empty()).then(|| (service.to_string(), method.to_string()))
}

fn find_method(pool: &DescriptorPool, service: &str, method: &str) -> Option<MethodDescriptor> {
    pool.get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == method)
}

/// `protobufFile` is inline `.proto` text (what Tracetest stores) or a path
/// relative to the test file.
fn compile_proto(spec: &str, base_dir: &Path) -> Result<DescriptorPool, GrpcError> {
    let inline = spec.contains('\n') || spec.trim_start().starts_with("syntax");
    let mut compiler = if inline {
        let resolver = protox::file::ChainFileResolver::new();
        let mut resolver = resolver;
        resolver.add(InlineFile {
            source: spec.to_string(),
        });
        resolver.add(protox::file::IncludeFileResolver::new(
            base_dir.to_path_buf(),
        ));
        resolver.add(protox::file::GoogleFileResolver::new());
        protox::Compiler::with_file_resolver(resolver)
    } else {
        let path = base_dir.join(spec);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        protox::Compiler::new([dir]).map_err(|e| GrpcError::Proto(e.to_string()))?
    };
    let name = if inline {
        INLINE_NAME.to_string()
    } else {
        Path::new(spec)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    compiler.include_imports(true);
    compiler
        .open_file(&name)
        .map_err(|e| GrpcError::Proto(e.to_string()))?;
    Ok(compiler.descriptor_pool())
}

const INLINE_NAME: &str = "tracecheck-inline.proto";

struct InlineFile {
    source: String,
}

impl protox::file::FileResolver for InlineFile {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == INLINE_NAME {
            protox::file::File::from_source(name, &self.source)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// Descriptors of `service` and everything it imports, from the server's
/// `grpc.reflection.v1` service.
/// Server reflection, v1 or (for older servers) v1alpha: the two are the
/// same messages under another package, so v1alpha is spoken by re-encoding.
enum Reflection {
    V1(ServerReflectionClient<tonic::transport::Channel>),
    V1Alpha(V1AlphaClient<tonic::transport::Channel>),
}

impl Reflection {
    /// One request, its one answer.
    async fn ask(
        &mut self,
        request: ServerReflectionRequest,
    ) -> Result<ServerReflectionResponse, tonic::Status> {
        let closed =
            || tonic::Status::unavailable("the server closed the stream without an answer");
        match self {
            Reflection::V1(c) => c
                .server_reflection_info(tokio_stream::iter([request]))
                .await?
                .into_inner()
                .message()
                .await?
                .ok_or_else(closed),
            Reflection::V1Alpha(c) => {
                let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest::decode(
                    request.encode_to_vec().as_slice(),
                )
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
                let answer = c
                    .server_reflection_info(tokio_stream::iter([request]))
                    .await?
                    .into_inner()
                    .message()
                    .await?
                    .ok_or_else(closed)?;
                ServerReflectionResponse::decode(answer.encode_to_vec().as_slice())
                    .map_err(|e| tonic::Status::internal(e.to_string()))
            }
        }
    }
}

async fn reflect(
    channel: tonic::transport::Channel,
    service: &str,
) -> Result<DescriptorPool, String> {
    let mut client = Reflection::V1(ServerReflectionClient::new(channel.clone()));
    let mut files: Vec<FileDescriptorProto> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue = vec![MessageRequest::FileContainingSymbol(service.to_string())];
    while let Some(req) = queue.pop() {
        if files.len() > MAX_REFLECTED_FILES {
            return Err(format!("more than {MAX_REFLECTED_FILES} files"));
        }
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(req),
        };
        let answer = match client.ask(request.clone()).await {
            // Servers built before reflection v1 (grpc-go until 1.55,
            // grpcio-reflection's old releases) only serve v1alpha.
            Err(s)
                if s.code() == tonic::Code::Unimplemented
                    && matches!(client, Reflection::V1(_)) =>
            {
                client = Reflection::V1Alpha(V1AlphaClient::new(channel.clone()));
                client.ask(request).await
            }
            other => other,
        }
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        match answer.message_response {
            Some(MessageResponse::FileDescriptorResponse(r)) => {
                for raw in r.file_descriptor_proto {
                    let f = FileDescriptorProto::decode(raw.as_slice())
                        .map_err(|e| format!("undecodable descriptor: {e}"))?;
                    if !seen.insert(f.name().to_string()) {
                        continue;
                    }
                    for dep in &f.dependency {
                        if !seen.contains(dep) {
                            queue.push(MessageRequest::FileByFilename(dep.clone()));
                        }
                    }
                    files.push(f);
                }
            }
            Some(MessageResponse::ErrorResponse(e)) => {
                return Err(format!("{} (code {})", e.error_message, e.error_code))
            }
            _ => return Err("unexpected answer".into()),
        }
    }
    // Add each file after its imports.
    let mut pool = DescriptorPool::new();
    let mut added: HashSet<String> = HashSet::new();
    while !files.is_empty() {
        let before = files.len();
        let mut rest = Vec::new();
        for f in files {
            if f.dependency.iter().all(|d| added.contains(d)) {
                added.insert(f.name().to_string());
                pool.add_file_descriptor_proto(f)
                    .map_err(|e| format!("descriptor {e}"))?;
            } else {
                rest.push(f);
            }
        }
        if rest.len() == before {
            return Err("descriptors import files the server did not send".into());
        }
        files = rest;
    }
    Ok(pool)
}

/// Encodes and decodes dynamic messages of one method.
struct DynamicCodec {
    output: MessageDescriptor,
}

struct DynEncoder;
struct DynDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynEncoder;
    type Decoder = DynDecoder;

    fn encoder(&mut self) -> DynEncoder {
        DynEncoder
    }

    fn decoder(&mut self) -> DynDecoder {
        DynDecoder(self.output.clone())
    }
}

impl Encoder for DynEncoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: DynamicMessage,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Decoder for DynDecoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        DynamicMessage::decode(self.0.clone(), bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}
