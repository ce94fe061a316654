//! `tracecheck test run` and the daemon's runs API from the outside: the
//! real binary against a real instrumented app (examples/pokeshop, Python
//! with the OpenTelemetry SDK), files in every form Tracetest's
//! documentation shows against in-process systems under test, and bad
//! files. Every wait is bounded.

#[path = "testrun/app.rs"]
mod app;
#[path = "testrun/bad_files.rs"]
mod bad_files;
#[path = "testrun/forms.rs"]
mod forms;
#[path = "testrun/https.rs"]
mod https;
#[path = "testrun/propagation.rs"]
mod propagation;
#[path = "testrun/tracetest_files.rs"]
mod tracetest_files;
#[path = "testrun/util.rs"]
mod util;
