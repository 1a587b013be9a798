//! driftwatch: a Kafka consumer-group service that watches ML model telemetry
//! for drift and degradation and requests retraining when a model needs it.
//!
//! The engine ([`engine`]) is pure: events and statuses in, retrain requests
//! out. The Kafka shell ([`kafka`]), the replay command and the demo all drive
//! the same engine. See ARCHITECTURE.md for the module map.

pub mod bench;
pub mod codec;
pub mod config;
pub mod coordinate;
pub mod demo;
pub mod detect;
pub mod engine;
pub mod evaluate;
pub mod http;
pub mod kafka;
pub mod model;
pub mod replay;
pub mod report;
pub mod service;
pub mod simulate;
pub mod simulator;
pub mod telemetry;
