//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::ingest::{Ingest, IngestError};
use crate::metrics::Transport;
use crate::otlp::lazy::trace_service_server::{TraceService, TraceServiceServer};
use crate::otlp::lazy::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use crate::otlp::{LazyExportRequest, WalkLimits};

pub struct GrpcReceiver {
    ingest: Arc<Ingest>,
    limits: WalkLimits,
}

/// The tonic service, with gzip accepted and the size limit applied after
/// decompression.
pub fn service(
    ingest: Arc<Ingest>,
    max_recv_msg_size: usize,
    limits: WalkLimits,
) -> TraceServiceServer<GrpcReceiver> {
    TraceServiceServer::new(GrpcReceiver { ingest, limits })
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_decoding_message_size(max_recv_msg_size)
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<LazyExportRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        match self
            .ingest
            .ingest(request.into_inner(), Transport::grpc, &self.limits)
            .await
        {
            Ok(a) => Ok(Response::new(ExportTraceServiceResponse {
                // A message with nothing rejected is a warning, as OTLP allows.
                partial_success: (a.rejected_spans > 0 || !a.message.is_empty()).then_some(
                    ExportTracePartialSuccess {
                        rejected_spans: a.rejected_spans as i64,
                        error_message: a.message,
                    },
                ),
            })),
            Err(e) => Err(status_of(&e)),
        }
    }
}

/// The OTLP spec's answers: INVALID_ARGUMENT is final; UNAVAILABLE with
/// RetryInfo tells the sender to come back.
pub fn status_of(e: &IngestError) -> Status {
    match e {
        IngestError::Invalid(m) => Status::invalid_argument(m.clone()),
        IngestError::Overloaded {
            message,
            retry_after,
            ..
        } => Status::with_error_details(
            tonic::Code::Unavailable,
            message.clone(),
            ErrorDetails::with_retry_info(Some(*retry_after)),
        ),
        IngestError::ShuttingDown => Status::with_error_details(
            tonic::Code::Unavailable,
            e.to_string(),
            ErrorDetails::with_retry_info(Some(super::ingest::RETRY_AFTER)),
        ),
    }
}

/// `receivers.otlp.auth` on gRPC: tonic runs the interceptor on the call's
/// metadata before it reads the message, so a refused call is never
/// decoded, admitted or counted as spans.
pub type AuthLayer = tonic::service::InterceptorLayer<BearerAuth>;

/// Checks `authorization: Bearer <token>`; without a token configured it
/// lets everything through.
#[derive(Clone)]
pub struct BearerAuth {
    token: Option<Arc<crate::net::auth::BearerToken>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl BearerAuth {
    pub fn layer(
        token: Option<Arc<crate::net::auth::BearerToken>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> AuthLayer {
        tonic::service::InterceptorLayer::new(Self { token, metrics })
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let offered = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if token.admits_authorization(offered) {
            return Ok(request);
        }
        self.metrics.refused(
            Transport::grpc,
            crate::metrics::RefuseReason::unauthenticated,
            0,
        );
        Err(crate::net::auth::grpc_unauthenticated())
    }
}
