//! `driftwatch replay --report`: a self-contained HTML page (inline CSS and
//! SVG, no script, nothing fetched) with a timeline per model: metric
//! values, window aggregates coloured by verdict, the detector statistic
//! against its threshold, and the requests.

mod svg;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::model::RetrainRequest;
pub use svg::MAX_POINTS_PER_SERIES;

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

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}\
h2{margin-top:36px;border-top:1px solid #ddd;padding-top:12px}h3{font-size:14px;margin:14px 0 2px}\
.note{color:#666;font-size:12px}svg{display:block}";

/// The report as one HTML document.
pub fn render_html(data: &ReportData) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let title = escape(&data.title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
    );
    out.push_str("<table>");
    for (k, v) in &data.summary {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    out.push_str("</table>\n");
    out.push_str("<p class=\"note\">Grey: stable windows; amber: warning; red: drift. Vertical purple lines: retrain requests, on every chart of the model (hover for details). Times in UTC.</p>\n");

    // Models with requests first, then by name.
    let mut order: Vec<(&String, &ModelTimeline)> = data.models.iter().collect();
    order.sort_by_key(|(name, m)| (std::cmp::Reverse(m.requests.len()), (*name).clone()));
    out.push_str(
        "<h2>Models</h2><table><tr><th>model</th><th>requests</th><th>drift windows</th></tr>",
    );
    for (i, (name, model)) in order.iter().enumerate() {
        let drifts = model.windows.iter().filter(|w| w.level == "drift").count();
        let _ = write!(
            out,
            "<tr><td><a href=\"#m{i}\">{}</a></td><td>{}</td><td>{drifts}</td></tr>",
            escape(name),
            model.requests.len()
        );
    }
    out.push_str("</table>\n");
    for (i, (name, model)) in order.iter().enumerate() {
        model_section(&mut out, i, name, model);
    }
    out.push_str("</body></html>\n");
    out
}

fn model_section(out: &mut String, index: usize, name: &str, model: &ModelTimeline) {
    let _ = writeln!(out, "<section id=\"m{index}\"><h2>{}</h2>", escape(name));
    let mut metrics: Vec<&str> = model.samples.keys().map(String::as_str).collect();
    for w in &model.windows {
        if !metrics.contains(&w.metric.as_str()) {
            metrics.push(&w.metric);
        }
    }
    if metrics.is_empty() {
        out.push_str("<p class=\"note\">No samples.</p>");
    }
    for metric in metrics {
        let samples = model.samples.get(metric).map_or(&[][..], Vec::as_slice);
        let windows: Vec<&WindowPoint> = model
            .windows
            .iter()
            .filter(|w| w.metric == metric)
            .collect();
        // Every request of the model on every chart: a request's own metric
        // may have no chart (a composite, or samples without windows).
        let requests: Vec<&RetrainRequest> = model.requests.iter().collect();
        let _ = writeln!(out, "<h3>{}</h3>", escape(metric));
        let chart = svg::Chart::new(samples, &windows, &requests);
        if chart.downsampled() {
            let _ = write!(
                out,
                "<p class=\"note\">{} samples, drawn as the minimum and maximum of {} buckets.</p>",
                samples.len(),
                svg::MAX_POINTS_PER_SERIES / 2
            );
        }
        out.push_str(&chart.render());
    }
    if !model.requests.is_empty() {
        out.push_str("<table><tr><th>triggered at</th><th>request id</th><th>rule</th><th>action</th><th>reason</th></tr>");
        for r in &model.requests {
            let _ = write!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                svg::utc(r.triggered_at),
                escape(&r.request_id),
                escape(&r.rule),
                r.action.as_str(),
                escape(&r.reason)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>\n");
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, ModelRef};

    fn request(name: &str, id: &str, at: i64) -> RetrainRequest {
        RetrainRequest {
            request_id: id.to_owned(),
            model: ModelRef::new("p", name, None),
            action: Action::FineTune,
            rule: "acc".to_owned(),
            detector: "threshold".to_owned(),
            metric: "accuracy".to_owned(),
            observed: 0.5,
            threshold: 0.8,
            window_start: at - 60_000,
            window_end: at,
            triggered_at: at,
            reason: "accuracy mean 0.5 below 0.8 <b>".to_owned(),
            evidence: BTreeMap::new(),
        }
    }

    fn window(level: &str, start: i64, value: f64) -> WindowPoint {
        WindowPoint {
            rule: "acc".to_owned(),
            metric: "accuracy".to_owned(),
            start,
            end: start + 60_000,
            value,
            level: level.to_owned(),
            statistic: Some(value),
            threshold: Some(0.8),
        }
    }

    fn data() -> ReportData {
        let mut models = BTreeMap::new();
        models.insert(
            "p/good".to_owned(),
            ModelTimeline {
                samples: BTreeMap::from([(
                    "accuracy".to_owned(),
                    (0..10).map(|i| (i * 60_000, 0.9)).collect(),
                )]),
                windows: vec![window("stable", 0, 0.9)],
                requests: Vec::new(),
            },
        );
        models.insert(
            "p/<script>alert(1)</script>".to_owned(),
            ModelTimeline {
                samples: BTreeMap::from([(
                    "accuracy".to_owned(),
                    (0..10).map(|i| (i * 60_000, 0.5)).collect(),
                )]),
                windows: vec![window("warning", 0, 0.7), window("drift", 60_000, 0.5)],
                requests: vec![request("<script>alert(1)</script>", "req-42", 120_000)],
            },
        );
        ReportData {
            title: "replay of t.jsonl".to_owned(),
            models,
            summary: vec![("requests".to_owned(), "1".to_owned())],
        }
    }

    #[test]
    fn names_and_reasons_are_escaped() {
        let html = render_html(&data());
        assert!(!html.contains("<script>"), "raw script tag in the page");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("below 0.8 &lt;b&gt;"));
        assert_eq!(escape(r#"a"b'c&"#), "a&quot;b&#39;c&amp;");
    }

    #[test]
    fn requests_and_verdicts_appear_in_their_model_section() {
        let html = render_html(&data());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
        // The model with a request comes first, and holds the request.
        let first = html.find("id=\"m0\"").expect("first section");
        let second = html.find("id=\"m1\"").expect("second section");
        let marker = html.find("<title>request req-42").expect("request marker");
        assert!(html[first..second].contains("&lt;script&gt;"));
        assert!(
            !html[second..].contains("req-42"),
            "only in its own section"
        );
        assert!(first < marker && marker < second, "marker in its section");
        // Verdict colours: drift red, warning amber, stable grey.
        assert!(html[first..second].contains(svg::DRIFT));
        assert!(html[first..second].contains(svg::WARNING));
        assert!(html[second..].contains(svg::STABLE));
        assert!(!html[second..].contains(svg::DRIFT));
        assert!(html.contains("1970-01-01T00:02:00Z"), "triggered_at in UTC");
    }
}
