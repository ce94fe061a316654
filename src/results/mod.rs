//! Results: what the evaluator's verdicts become — a bounded store of
//! recent verdicts with their traces ([`store`]), alerts to Alertmanager and
//! webhooks ([`alerts`]), verdicts counted per version of a service
//! ([`versions`]), and the config of alerts and trace links ([`config`]).
//! Nothing here serves HTTP: the admin face (`admin`) reads it.

pub mod alerts;
pub mod config;
pub mod store;
pub mod versions;
