//! Trace context headers a trigger carries, in the formats Tracetest's
//! agent injects (agent/workers/trigger/instrument.go `propagators()`:
//! W3C trace context, B3, Jaeger, OT and AWS X-Ray, all on every request).
//! Here they are chosen per run, W3C alone by default: a service that
//! understands several formats may pick any of them, and one that reads a
//! format it was not meant to can start a second trace.
//!
//! Every header of one request names the same trace and the same parent
//! span, so whichever one the service reads, its spans land in the trace
//! the run waits for.

use std::fmt;
use std::str::FromStr;

use crate::ids::{SpanId, TraceId};

/// One propagation format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    /// `traceparent: 00-<trace>-<span>-01`
    W3c,
    /// `b3: <trace>-<span>-1` (the single header, what B3's default
    /// encoding in OpenTelemetry Go injects).
    B3,
    /// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`.
    B3Multi,
    /// `uber-trace-id: <trace>:<span>:0:1`
    Jaeger,
    /// `X-Amzn-Trace-Id: Root=1-<8 hex>-<24 hex>;Parent=<span>;Sampled=1`
    XRay,
}

impl Format {
    const ALL: [Format; 5] = [
        Format::W3c,
        Format::B3,
        Format::B3Multi,
        Format::Jaeger,
        Format::XRay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::W3c => "w3c",
            Format::B3 => "b3",
            Format::B3Multi => "b3multi",
            Format::Jaeger => "jaeger",
            Format::XRay => "xray",
        }
    }

    fn parse(s: &str) -> Option<Format> {
        Some(match s.to_ascii_lowercase().as_str() {
            "w3c" | "tracecontext" | "traceparent" => Format::W3c,
            "b3" => Format::B3,
            "b3multi" | "b3-multi" => Format::B3Multi,
            "jaeger" | "uber-trace-id" => Format::Jaeger,
            "xray" | "aws-xray" | "awsxray" => Format::XRay,
            _ => return None,
        })
    }

    fn headers(self, trace: TraceId, span: SpanId, out: &mut Vec<(&'static str, String)>) {
        let t = trace.to_hex();
        let s = span.to_hex();
        match self {
            Format::W3c => out.push(("traceparent", format!("00-{t}-{s}-01"))),
            Format::B3 => out.push(("b3", format!("{t}-{s}-1"))),
            Format::B3Multi => {
                out.push(("X-B3-TraceId", t));
                out.push(("X-B3-SpanId", s));
                out.push(("X-B3-Sampled", "1".into()));
            }
            // The third field is the deprecated parent span ID, always 0.
            Format::Jaeger => out.push(("uber-trace-id", format!("{t}:{s}:0:1"))),
            Format::XRay => out.push((
                "X-Amzn-Trace-Id",
                format!("Root=1-{}-{};Parent={s};Sampled=1", &t[..8], &t[8..]),
            )),
        }
    }
}

/// The formats of a run, each once, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propagation(Vec<Format>);

impl Default for Propagation {
    fn default() -> Self {
        Propagation(vec![Format::W3c])
    }
}

impl Propagation {
    pub fn formats(&self) -> &[Format] {
        &self.0
    }

    /// A fresh trace ID for a trigger. With X-Ray its first 32 bits are the
    /// current Unix time, as X-Ray reads them (and as Tracetest makes IDs
    /// for its X-Ray data store, agent/tracedb/awsxray.go): X-Ray refuses
    /// traces whose time part is far from now.
    pub fn new_trace_id(&self) -> TraceId {
        let mut id = super::trigger::new_trace_id();
        if self.0.contains(&Format::XRay) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            id.0[..4].copy_from_slice(&(now as u32).to_be_bytes());
        }
        id
    }

    /// The headers of one request in trace `trace` whose parent is `span`.
    pub fn headers(&self, trace: TraceId, span: SpanId) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(self.0.len() + 2);
        for f in &self.0 {
            f.headers(trace, span, &mut out);
        }
        out
    }
}

impl FromStr for Propagation {
    type Err = String;

    /// A comma-separated list of format names, or `all`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut formats = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part.eq_ignore_ascii_case("all") {
                formats.extend(Format::ALL);
                continue;
            }
            match Format::parse(part) {
                Some(f) => formats.push(f),
                None => {
                    return Err(format!(
                        "unknown propagation format {part:?}: expected w3c, b3, b3multi, jaeger, xray or all (comma-separated)"
                    ))
                }
            }
        }
        if formats.is_empty() {
            return Err(
                "no propagation format: expected w3c, b3, b3multi, jaeger, xray or all".into(),
            );
        }
        formats.sort();
        formats.dedup();
        Ok(Propagation(formats))
    }
}

impl fmt::Display for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|x| x.name()).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (TraceId, SpanId) {
        (
            TraceId::parse_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id"),
            SpanId::parse_hex("00f067aa0ba902b7").expect("span id"),
        )
    }

    fn headers(p: &str) -> Vec<(&'static str, String)> {
        let (t, s) = ids();
        p.parse::<Propagation>().expect("formats").headers(t, s)
    }

    #[test]
    fn w3c_is_the_default_and_a_sampled_traceparent() {
        let (t, s) = ids();
        assert_eq!(
            Propagation::default().headers(t, s),
            vec![(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string()
            )]
        );
    }

    #[test]
    fn b3_single_header() {
        assert_eq!(
            headers("b3"),
            vec![(
                "b3",
                "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1".to_string()
            )]
        );
    }

    #[test]
    fn b3_multi_headers() {
        assert_eq!(
            headers("b3multi"),
            vec![
                (
                    "X-B3-TraceId",
                    "4bf92f3577b34da6a3ce929d0e0e4736".to_string()
                ),
                ("X-B3-SpanId", "00f067aa0ba902b7".to_string()),
                ("X-B3-Sampled", "1".to_string()),
            ]
        );
    }

    #[test]
    fn jaeger_header() {
        assert_eq!(
            headers("jaeger"),
            vec![(
                "uber-trace-id",
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1".to_string()
            )]
        );
    }

    #[test]
    fn xray_header_splits_the_trace_id_after_its_time_part() {
        assert_eq!(
            headers("xray"),
            vec![(
                "X-Amzn-Trace-Id",
                "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
                    .to_string()
            )]
        );
    }

    #[test]
    fn xray_trace_ids_start_with_the_current_unix_time() {
        let p: Propagation = "xray".parse().expect("formats");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as u32;
        let id = p.new_trace_id();
        let at = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
        assert!(at.abs_diff(now) <= 2, "{at} vs {now}");
        assert!(id.is_valid());
    }

    #[test]
    fn lists_are_deduplicated_in_a_fixed_order_and_all_has_every_format() {
        let p: Propagation = " xray, b3 ,W3C,b3".parse().expect("formats");
        assert_eq!(p.to_string(), "w3c,b3,xray");
        let all: Propagation = "all".parse().expect("formats");
        assert_eq!(all.to_string(), "w3c,b3,b3multi,jaeger,xray");
        let (t, s) = ids();
        // One trace and one parent span in every header.
        for (_, v) in all.headers(t, s) {
            if v != "1" {
                assert!(
                    v.contains("00f067aa0ba902b7") || v.contains("4bf92f35"),
                    "{v}"
                );
            }
        }
        assert_eq!(all.headers(t, s).len(), 7);
    }

    #[test]
    fn unknown_or_empty_lists_are_refused_with_the_choices() {
        let e = "w3c,zipkin".parse::<Propagation>().expect_err("unknown");
        assert!(e.contains("\"zipkin\"") && e.contains("b3multi"), "{e}");
        assert!(" , ".parse::<Propagation>().is_err());
    }
}
