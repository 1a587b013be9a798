//! `driftwatch replay --report`: a self-contained HTML timeline per model.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::RetrainRequest;

/// Everything the report shows, gathered by the replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReportData {
    pub title: String,
    /// Per model lineage "project/name".
    pub models: BTreeMap<String, ModelTimeline>,
    /// Totals for the header: events applied, skipped by reason, invalid.
    pub summary: Vec<(String, String)>,
}

/// One model's samples, judged windows and requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelTimeline {
    /// Raw samples per metric: (event time ms, value).
    pub samples: BTreeMap<String, Vec<(i64, f64)>>,
    /// One entry per closed window evaluated by a rule.
    pub windows: Vec<WindowPoint>,
    pub requests: Vec<RetrainRequest>,
}

/// A window judged by a rule.
#[derive(Debug, Clone, Serialize)]
pub struct WindowPoint {
    pub rule: String,
    pub metric: String,
    pub start: i64,
    pub end: i64,
    /// The window aggregate fed to the detector.
    pub value: f64,
    /// "stable" | "warning" | "drift".
    pub level: String,
    /// The detector's statistic and threshold after this window, if it has them.
    pub statistic: Option<f64>,
    pub threshold: Option<f64>,
}
