//! End-to-end tests of the OTLP spine — receivers, assembler, forwarding —
//! as a user meets it: real OTLP clients, a downstream that counts what
//! arrives, `/metrics`, and the `tracecheck` binary itself. Loopback only;
//! every wait is a poll with a deadline.
//!
//! Run with `cargo test --test spine`.

mod util;

#[path = "spine/bad_input.rs"]
mod bad_input;
#[path = "spine/binary.rs"]
mod binary;
#[path = "spine/faults.rs"]
mod faults;
#[path = "spine/load.rs"]
mod load;
#[path = "spine/memory.rs"]
mod memory;
#[path = "spine/outage.rs"]
mod outage;
#[path = "spine/overload.rs"]
mod overload;
#[path = "spine/persistent.rs"]
mod persistent;
#[path = "spine/sdk.rs"]
mod sdk;
