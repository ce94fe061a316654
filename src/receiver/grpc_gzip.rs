//! gzip-compressed OTLP/gRPC messages, inflated before tonic sees them: off
//! the runtime's workers when large ([`INLINE`]), at most one per core at a
//! time, and
//! charged to the memory account (`decode`) before they expand, as
//! OTLP/HTTP bodies are ([`super::http`]). Left to tonic, every connection
//! would inflate up to `max_recv_msg_size_mib` on its own task, uncounted;
//! the Collector's OTLP exporter compresses with gzip by default, so this
//! is most gRPC traffic.
//!
//! The request goes on to tonic uncompressed, without `grpc-encoding`; its
//! answers are as tonic's would have been: a message too large once
//! inflated is `RESOURCE_EXHAUSTED` (never retried), one that is not gzip
//! `INVALID_ARGUMENT`, and over the memory account's soft limit
//! `UNAVAILABLE` with retry info.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::Service;

use crate::memory::{Charge, MemoryAccount, OverLimit, Part};
use crate::metrics::{Metrics, RefuseReason, Transport};
use crate::otlp::GunzipError;

/// Messages up to this size, compressed and inflated, are inflated on the
/// request's own task (a millisecond or two at most): handing the usual
/// ~100 KB request to the blocking pool cost 8 % more CPU per span on
/// split gzip traffic (BENCHMARKS.md, "gzip gRPC inflated before tonic").
/// Tonic itself inflated up to `max_recv_msg_size_mib` inline.
const INLINE: usize = 512 * 1024;

/// The gRPC frame header: a compressed flag and a big-endian length.
const FRAME_HEADER: usize = 5;

/// Wraps a gRPC service; see the module's documentation.
#[derive(Clone)]
pub struct Inflate<S> {
    inner: S,
    shared: Arc<Shared>,
}

struct Shared {
    memory: Arc<MemoryAccount>,
    metrics: Arc<Metrics>,
    max_message: usize,
    /// One permit per inflation running: as many as there are cores.
    turns: Arc<Semaphore>,
}

impl<S> Inflate<S> {
    pub fn new(
        inner: S,
        memory: Arc<MemoryAccount>,
        metrics: Arc<Metrics>,
        max_message: usize,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            inner,
            shared: Arc::new(Shared {
                memory,
                metrics,
                max_message,
                turns: Arc::new(Semaphore::new(cores)),
            }),
        }
    }
}

impl<S: NamedService> NamedService for Inflate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Inflate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The one made ready is the one called; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gzip = request
            .headers()
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        if !gzip {
            return Box::pin(inner.call(request));
        }
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            match shared.inflate(body).await {
                Ok((plain, charge)) => {
                    parts.headers.remove("grpc-encoding");
                    let request = http::Request::from_parts(parts, Body::new(Full::new(plain)));
                    let answer = inner.call(request).await;
                    // Decoded by now: the request holds the bytes, counted
                    // under `requests` from here on.
                    drop(charge);
                    answer
                }
                Err(refusal) => Ok(shared.answer(refusal).into_http()),
            }
        })
    }
}

/// Why a compressed message was not inflated.
#[derive(Debug)]
enum Refusal {
    TooLarge,
    /// Inflating it would need more than the memory limit: never taken.
    NeverFits(usize),
    Corrupt(String),
    Memory(OverLimit),
    /// Inflated past what its trailer said (several gzip members, or a
    /// trailer that lies): to be inflated again off the runtime, to the
    /// message limit.
    Understated,
    Internal,
}

impl Shared {
    async fn inflate(self: &Arc<Self>, body: Body) -> Result<(Bytes, Charge), Refusal> {
        // A compressed message is no larger than the limit on the wire.
        let raw = match Limited::new(body, self.max_message + FRAME_HEADER)
            .collect()
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(Refusal::TooLarge)
            }
            Err(e) => return Err(Refusal::Corrupt(format!("cannot read the request: {e}"))),
        };
        let charge = self.memory.charge(Part::decode, raw.len());
        let turn = Arc::clone(&self.turns)
            .acquire_owned()
            .await
            .map_err(|_| Refusal::Internal)?;
        let by_trailer = frames(&raw)?
            .iter()
            .filter(|f| f.compressed)
            .map(|f| crate::otlp::gzip_size(f.message))
            .fold(0usize, usize::saturating_add);
        let mut charge = charge;
        if raw.len() <= INLINE && by_trailer <= INLINE {
            match inflate_frames(&raw, &mut charge, &self.memory, self.max_message, true) {
                Err(Refusal::Understated) => {}
                done => return done.map(|b| (b, charge)),
            }
        }
        let shared = Arc::clone(self);
        let work = move || {
            let _turn = turn;
            let mut charge = charge;
            let trusted =
                inflate_frames(&raw, &mut charge, &shared.memory, shared.max_message, true);
            let done = match trusted {
                Err(Refusal::Understated) => {
                    inflate_frames(&raw, &mut charge, &shared.memory, shared.max_message, false)
                }
                done => done,
            };
            done.map(|b| (b, charge))
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(done) => done,
            Err(e) if e.is_panic() => {
                self.metrics
                    .internal_panics
                    .get_or_create(&crate::metrics::PanicLabels { stage: "receiver" })
                    .inc();
                tracing::error!(error = %e, "Inflating an OTLP/gRPC message panicked (a bug; please report it).");
                Err(Refusal::Internal)
            }
            // Not run: the runtime is shutting down.
            Err(_) => Err(Refusal::Internal),
        }
    }

    fn answer(&self, refusal: Refusal) -> Status {
        let refused = |reason| self.metrics.refused(Transport::grpc, reason, 0);
        match refusal {
            Refusal::TooLarge => {
                refused(RefuseReason::too_large);
                Status::resource_exhausted(format!(
                    "decompressed message larger than the limit of {} bytes",
                    self.max_message
                ))
            }
            Refusal::NeverFits(needed) => {
                refused(RefuseReason::too_large);
                Status::resource_exhausted(format!(
                    "inflating this message takes about {needed} bytes, more than the memory limit of {} bytes (assembler.max_memory_mib); send smaller batches",
                    self.memory.limit()
                ))
            }
            Refusal::Corrupt(why) => {
                refused(RefuseReason::malformed);
                Status::invalid_argument(format!("invalid gzip message: {why}"))
            }
            Refusal::Memory(e) => {
                refused(RefuseReason::memory_limit);
                Status::with_error_details(
                    Code::Unavailable,
                    e.to_string(),
                    ErrorDetails::with_retry_info(Some(super::ingest::RETRY_AFTER)),
                )
            }
            Refusal::Understated | Refusal::Internal => Status::internal(
                "inflating the message failed inside tracecheck (a bug; please report it)",
            ),
        }
    }
}

struct Frame<'a> {
    compressed: bool,
    message: &'a [u8],
}

/// The body's gRPC frames (a unary call has one).
fn frames(raw: &[u8]) -> Result<Vec<Frame<'_>>, Refusal> {
    let mut out = Vec::with_capacity(1);
    let mut rest = raw;
    while !rest.is_empty() {
        let (&[flag, a, b, c, d], after) = rest
            .split_first_chunk::<FRAME_HEADER>()
            .ok_or_else(|| Refusal::Corrupt("a gRPC frame cut short".into()))?;
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        let message = after
            .get(..len)
            .ok_or_else(|| Refusal::Corrupt("a gRPC frame cut short".into()))?;
        out.push(Frame {
            compressed: flag == 1,
            message,
        });
        rest = &after[len..];
    }
    Ok(out)
}

/// Every compressed frame inflated, the body re-framed uncompressed.
/// `trust_trailer`: reserve and inflate each message only up to what its
/// gzip trailer says (refused `Understated` if it goes further); otherwise
/// up to the message limit. `charge` holds the body, then its result.
fn inflate_frames(
    raw: &[u8],
    charge: &mut Charge,
    memory: &Arc<MemoryAccount>,
    max_message: usize,
    trust_trailer: bool,
) -> Result<Bytes, Refusal> {
    let frames = frames(raw)?;
    // What deflate can make of a message, at most the message limit.
    let ceiling =
        |f: &Frame<'_>| max_message.min(f.message.len().saturating_mul(crate::otlp::MAX_INFLATION));
    let limit = |f: &Frame<'_>| {
        if trust_trailer {
            crate::otlp::gzip_size(f.message).min(ceiling(f))
        } else {
            ceiling(f)
        }
    };
    let expected = frames
        .iter()
        .map(|f| {
            FRAME_HEADER
                + if f.compressed {
                    limit(f)
                } else {
                    f.message.len()
                }
        })
        .fold(0usize, usize::saturating_add);
    let needed = charge.bytes().saturating_add(expected);
    if !memory.fits(needed) {
        return Err(Refusal::NeverFits(needed));
    }
    let room = memory
        .reserve(Part::decode, charge.bytes(), expected)
        .map_err(Refusal::Memory)?;
    let mut out = BytesMut::with_capacity(expected);
    for f in &frames {
        let inflated;
        let message = if f.compressed {
            let limit = limit(f);
            inflated = match crate::otlp::gunzip_limited(f.message, limit) {
                Ok(m) => m,
                Err(GunzipError::TooLarge) if limit < ceiling(f) => {
                    return Err(Refusal::Understated)
                }
                Err(GunzipError::TooLarge) => return Err(Refusal::TooLarge),
                Err(GunzipError::Corrupt(e)) => return Err(Refusal::Corrupt(e.to_string())),
            };
            &inflated[..]
        } else {
            f.message
        };
        out.extend_from_slice(&[0]);
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
    }
    // From here the body is its inflated self.
    charge.set(out.len());
    drop(room);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).expect("gzip");
        enc.finish().expect("gzip")
    }

    fn frame(compressed: bool, message: &[u8]) -> Vec<u8> {
        let mut f = vec![u8::from(compressed)];
        f.extend_from_slice(&(message.len() as u32).to_be_bytes());
        f.extend_from_slice(message);
        f
    }

    fn account(limit: usize) -> Arc<MemoryAccount> {
        MemoryAccount::for_tests(limit)
    }

    #[test]
    fn a_compressed_frame_is_inflated_and_charged_as_its_inflated_self() {
        let memory = account(1 << 20);
        let message = vec![7u8; 100_000];
        let raw = frame(true, &gzip(&message));
        let mut charge = memory.charge(Part::decode, raw.len());
        let plain = inflate_frames(&raw, &mut charge, &memory, 1 << 19, true).expect("inflates");
        assert_eq!(plain[..], frame(false, &message)[..]);
        assert_eq!(memory.get(Part::decode), plain.len());
        drop(charge);
        assert_eq!(memory.get(Part::decode), 0);
    }

    #[test]
    fn a_trailer_that_understates_is_found_out_and_the_limit_still_holds() {
        let memory = account(1 << 20);
        let mut two = gzip(&[1u8; 50_000]);
        two.extend(gzip(b""));
        let raw = frame(true, &two);
        let mut charge = memory.charge(Part::decode, raw.len());
        // Trusting the trailer (0 bytes), it is found out…
        assert!(matches!(
            inflate_frames(&raw, &mut charge, &memory, 1 << 19, true),
            Err(Refusal::Understated)
        ));
        // …and inflated whole with the limit reserved instead.
        let plain = inflate_frames(&raw, &mut charge, &memory, 1 << 19, false).expect("whole");
        assert_eq!(plain.len(), FRAME_HEADER + 50_000);
        // Past the message limit it is refused for good.
        assert!(matches!(
            inflate_frames(&raw, &mut charge, &memory, 40_000, false),
            Err(Refusal::TooLarge)
        ));
        drop(charge);
        assert_eq!(memory.get(Part::decode), 0, "every charge returned");
    }

    #[test]
    fn what_the_account_cannot_hold_is_refused_for_a_retry_or_for_good() {
        let memory = account(250_000);
        let raw = frame(true, &gzip(&[3u8; 180_000]));
        // Beside what is held now it does not fit: retry.
        let held = memory.charge(Part::settled, 100_000);
        let mut charge = memory.charge(Part::decode, raw.len());
        assert!(matches!(
            inflate_frames(&raw, &mut charge, &memory, 1 << 20, true),
            Err(Refusal::Memory(_))
        ));
        drop(held);
        assert!(inflate_frames(&raw, &mut charge, &memory, 1 << 20, true).is_ok());
        drop(charge);
        // More than the whole limit: never.
        let small = account(150_000);
        let mut charge = small.charge(Part::decode, raw.len());
        assert!(matches!(
            inflate_frames(&raw, &mut charge, &small, 1 << 20, true),
            Err(Refusal::NeverFits(_))
        ));
        assert!(matches!(
            frames(&[1, 0, 0, 0, 9, 1]),
            Err(Refusal::Corrupt(_))
        ));
    }
}
