//! Alerts as data: threshold rules on the server's own metrics ([`crate::observe`]), evaluated
//! periodically; a rule that fires is logged at `warn` and POSTed as JSON to a webhook.
//!
//! The rules file is JSON (`spike serve --alert-rules FILE`):
//!
//! ```json
//! {
//!   "webhook": "http://127.0.0.1:9000/alerts",
//!   "interval_secs": 10,
//!   "rules": [
//!     { "name": "token-guessing", "metric": "spike_auth_refusals_total",
//!       "labels": { "reason": "forged" }, "condition": "increase",
//!       "over": 20, "window_secs": 60 },
//!     { "name": "crowded", "metric": "spike_connections", "condition": "value",
//!       "over": 500, "window_secs": 300 }
//!   ]
//! }
//! ```
//!
//! - `webhook` (optional): where firing alerts are POSTed; without it they are only logged. A
//!   POST that gets no answer, 429 or a 5xx is retried with backoff (0.5 s doubling, 5 retries).
//! - `interval_secs` (default 10): how often every rule is evaluated.
//! - A rule sums every series of `metric` whose labels include `labels` (all of them when
//!   empty), as `/metrics` renders it. `condition` `increase` (the default) fires when the sum
//!   grew by more than `over` within the last `window_secs` (from the latest sample at least a
//!   window old, or the first sample); `value` fires when the sum itself is over `over`. A rule
//!   fires at most once per `window_secs`: after firing it stays quiet for a whole window, then
//!   fires again only if its condition still holds.
//!
//! The POSTed body ([`Alert`]): `{"rule", "metric", "labels", "condition", "value", "over",
//! "window_secs", "fired_at"}` with `fired_at` in seconds since the Unix epoch. A failed POST is
//! logged, not retried (the next window's alert is the retry).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What is wrong with a rules file.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The file could not be read.
    #[error("alert rules {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the documented shape.
    #[error("alert rules {path}, line {line}, column {column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser says (it names unknown or missing fields).
        message: String,
    },
    /// A value is out of range.
    #[error("alert rules {path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where, e.g. `rules[0].window_secs`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// How a rule compares its metric with `over`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The sum grew by more than `over` within the window (counters).
    #[default]
    Increase,
    /// The sum is over `over` (gauges).
    Value,
}

/// One threshold rule (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Name, in logs and in the POSTed alert.
    pub name: String,
    /// A metric name as `/metrics` renders it (a histogram's `_count` or `_sum` works too).
    pub metric: String,
    /// Labels a series must carry to count.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How to compare.
    #[serde(default)]
    pub condition: Condition,
    /// The threshold (exclusive).
    pub over: f64,
    /// The window, seconds; also the quiet time after firing.
    pub window_secs: f64,
}

/// A rules file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRules {
    /// Where alerts are POSTed (`http://` or `https://`).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Seconds between evaluations.
    #[serde(default = "default_interval")]
    pub interval_secs: f64,
    /// The rules.
    pub rules: Vec<AlertRule>,
}

fn default_interval() -> f64 {
    10.0
}

impl AlertRules {
    /// Reads and checks a rules file. Errors: [`AlertError`] naming the line and column, or the
    /// field, that is wrong.
    pub fn from_file(path: &Path) -> Result<Self, AlertError> {
        let text = std::fs::read_to_string(path).map_err(|source| AlertError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks rules from `text` (`path` is for the errors only).
    pub fn parse(text: &str, path: &Path) -> Result<Self, AlertError> {
        let rules: AlertRules = serde_json::from_str(text).map_err(|e| AlertError::Parse {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let invalid = |field: String, message: &str| AlertError::Invalid {
            path: path.to_owned(),
            field,
            message: message.to_owned(),
        };
        if !(rules.interval_secs.is_finite() && rules.interval_secs >= 0.01) {
            return Err(invalid(
                "interval_secs".into(),
                "must be at least 0.01 seconds",
            ));
        }
        if let Some(url) = &rules.webhook {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(_) => return Err(invalid("webhook".into(), "must be an http(s) URL")),
                Err(e) => return Err(invalid("webhook".into(), &e.to_string())),
            }
        }
        for (i, rule) in rules.rules.iter().enumerate() {
            if rule.name.trim().is_empty() {
                return Err(invalid(format!("rules[{i}].name"), "must not be empty"));
            }
            if rule.metric.is_empty()
                || !rule
                    .metric
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            {
                return Err(invalid(
                    format!("rules[{i}].metric"),
                    "must be a Prometheus metric name ([a-zA-Z0-9_:]+)",
                ));
            }
            if !(rule.window_secs.is_finite() && rule.window_secs > 0.0) {
                return Err(invalid(
                    format!("rules[{i}].window_secs"),
                    "must be a positive number of seconds",
                ));
            }
            if !rule.over.is_finite() {
                return Err(invalid(format!("rules[{i}].over"), "must be a number"));
            }
        }
        Ok(rules)
    }
}

/// A fired rule, as logged and POSTed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule's name.
    pub rule: String,
    /// The rule's metric.
    pub metric: String,
    /// The rule's labels.
    pub labels: BTreeMap<String, String>,
    /// The rule's condition.
    pub condition: Condition,
    /// The increase within the window, or the value.
    pub value: f64,
    /// The threshold it went over.
    pub over: f64,
    /// The rule's window, seconds.
    pub window_secs: f64,
    /// When it fired, seconds since the Unix epoch.
    pub fired_at: u64,
}

#[derive(Default)]
struct RuleState {
    /// `(when, sum)`, oldest first; the first one is at least a window old once there is one.
    samples: VecDeque<(Instant, f64)>,
    last_fired: Option<Instant>,
}

/// Evaluates rules against renderings of the metrics; keeps each rule's samples.
pub struct Evaluator {
    rules: AlertRules,
    state: Vec<RuleState>,
}

impl Evaluator {
    /// An evaluator with no samples yet.
    pub fn new(rules: AlertRules) -> Self {
        let state = rules.rules.iter().map(|_| RuleState::default()).collect();
        Self { rules, state }
    }

    /// Takes a sample of every rule from `rendering` (Prometheus text) at `now` and returns the
    /// alerts that fire.
    pub fn evaluate(&mut self, now: Instant, rendering: &str) -> Vec<Alert> {
        let mut fired = Vec::new();
        for (rule, state) in self.rules.rules.iter().zip(&mut self.state) {
            let window = Duration::from_secs_f64(rule.window_secs);
            let current = sum(rendering, &rule.metric, &rule.labels);
            let value = match rule.condition {
                Condition::Value => current,
                Condition::Increase => {
                    let start = now.checked_sub(window);
                    // Keep one sample at least a window old: it is the baseline.
                    while state.samples.len() >= 2 && start.is_some_and(|s| state.samples[1].0 <= s)
                    {
                        state.samples.pop_front();
                    }
                    let baseline = state.samples.front().map_or(current, |s| s.1);
                    state.samples.push_back((now, current));
                    current - baseline
                }
            };
            let quiet = state
                .last_fired
                .is_some_and(|t| now.duration_since(t) < window);
            if value > rule.over && !quiet {
                state.last_fired = Some(now);
                fired.push(Alert {
                    rule: rule.name.clone(),
                    metric: rule.metric.clone(),
                    labels: rule.labels.clone(),
                    condition: rule.condition,
                    value,
                    over: rule.over,
                    window_secs: rule.window_secs,
                    fired_at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                });
            }
        }
        fired
    }
}

/// Evaluates `rules` every `interval_secs` against `handle` until `stop` turns true; logs and
/// POSTs what fires.
pub(crate) async fn run(
    rules: AlertRules,
    handle: &'static metrics_exporter_prometheus::PrometheusHandle,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // reqwest is built without a default crypto provider; installing ours fails harmlessly
    // when one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alerts are off: cannot start the HTTP client");
            return;
        }
    };
    let webhook = rules.webhook.clone();
    let mut every = tokio::time::interval(Duration::from_secs_f64(rules.interval_secs));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut evaluator = Evaluator::new(rules);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for alert in evaluator.evaluate(Instant::now(), &handle.render()) {
            tracing::warn!(
                rule = alert.rule,
                metric = alert.metric,
                value = alert.value,
                over = alert.over,
                window_secs = alert.window_secs,
                "alert fired"
            );
            let Some(url) = webhook.clone() else {
                continue;
            };
            let client = client.clone();
            // Apart from evaluation, so a slow webhook never delays the next one.
            tokio::spawn(async move { post(&client, &url, &alert).await });
        }
    }
}

/// Why one POST of an alert did not land.
#[derive(Debug)]
enum PostFailure {
    /// No answer (connection refused, timeout) or 429/5xx: worth another try.
    Transient(String),
    /// Any other non-2xx status: the webhook will not take it.
    Refused(reqwest::StatusCode),
}

/// POSTs `alert` to `url`, retrying network errors, 429 and 5xx with exponential backoff and
/// jitter (0.5 s doubling, at most 5 retries, backon); a 4xx is not retried. Each outcome
/// is logged; nothing is returned, as nobody waits on it.
async fn post(client: &reqwest::Client, url: &str, alert: &Alert) {
    let once = || async {
        let response = client
            .post(url)
            .json(alert)
            .send()
            .await
            .map_err(|e| PostFailure::Transient(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(status)
        } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(PostFailure::Transient(format!("HTTP {status}")))
        } else {
            Err(PostFailure::Refused(status))
        }
    };
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_max_times(5)
        .with_jitter();
    let sent = backon::Retryable::retry(once, backoff)
        .sleep(tokio::time::sleep)
        .when(|e| matches!(e, PostFailure::Transient(_)))
        .notify(|e, wait| {
            tracing::debug!(rule = alert.rule, failure = ?e, ?wait, "retrying the alert webhook")
        })
        .await;
    match sent {
        Ok(status) => {
            tracing::debug!(rule = alert.rule, status = status.as_u16(), "alert posted")
        }
        Err(PostFailure::Refused(status)) => tracing::warn!(
            rule = alert.rule,
            status = status.as_u16(),
            "the alert webhook refused the alert"
        ),
        Err(PostFailure::Transient(reason)) => {
            tracing::warn!(rule = alert.rule, %reason, "posting the alert failed after 6 tries")
        }
    }
}

/// The sum of every series of `metric` that carries `labels`, in a Prometheus text rendering
/// (exposition format 0.0.4); 0 when there is none.
pub fn sum(rendering: &str, metric: &str, labels: &BTreeMap<String, String>) -> f64 {
    let mut total = 0.0;
    for line in rendering.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let (series_labels, value) = if let Some(body) = rest.strip_prefix('{') {
            let Some((parsed, after)) = parse_labels(body) else {
                continue;
            };
            (parsed, after)
        } else if rest.starts_with(' ') {
            (BTreeMap::new(), rest)
        } else {
            // Another metric that starts with this one's name.
            continue;
        };
        let matches = labels
            .iter()
            .all(|(k, v)| series_labels.get(k).is_some_and(|x| x == v));
        if !matches {
            continue;
        }
        let number = value.split_whitespace().next().unwrap_or("");
        if let Ok(v) = number.parse::<f64>() {
            total += v;
        }
    }
    total
}

/// Parses `k="v",k2="v2"}` (after the `{`); returns the labels and what follows the `}`.
fn parse_labels(body: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE spike_auth_refusals_total counter\n\
        spike_auth_refusals_total{reason=\"forged\"} 3\n\
        spike_auth_refusals_total{reason=\"expired\"} 2\n\
        spike_auth_refusals_total_other 100\n\
        spike_connections 7\n\
        odd{a=\"x\\\"y,z\",b=\"2\"} 5\n";

    #[test]
    fn sums_series_by_labels() {
        let none = BTreeMap::new();
        let forged = BTreeMap::from([("reason".to_owned(), "forged".to_owned())]);
        assert_eq!(sum(TEXT, "spike_auth_refusals_total", &none), 5.0);
        assert_eq!(sum(TEXT, "spike_auth_refusals_total", &forged), 3.0);
        assert_eq!(sum(TEXT, "spike_connections", &none), 7.0);
        assert_eq!(sum(TEXT, "spike_missing", &none), 0.0);
        let quoted = BTreeMap::from([("a".to_owned(), "x\"y,z".to_owned())]);
        assert_eq!(sum(TEXT, "odd", &quoted), 5.0);
    }

    fn rules(condition: Condition) -> AlertRules {
        AlertRules {
            webhook: None,
            interval_secs: 1.0,
            rules: vec![AlertRule {
                name: "r".into(),
                metric: "m".into(),
                labels: BTreeMap::new(),
                condition,
                over: 2.0,
                window_secs: 60.0,
            }],
        }
    }

    #[test]
    fn an_increase_fires_once_per_window() {
        let mut e = Evaluator::new(rules(Condition::Increase));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let m = |v: u32| format!("m {v}\n");
        assert!(
            e.evaluate(at(0), &m(10)).is_empty(),
            "the first sample is the baseline"
        );
        assert!(e.evaluate(at(10), &m(12)).is_empty(), "2 is not over 2");
        let fired = e.evaluate(at(20), &m(13));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].value, 3.0);
        // Still over the threshold, but within the window after firing: quiet.
        assert!(e.evaluate(at(30), &m(20)).is_empty());
        assert!(e.evaluate(at(79), &m(20)).is_empty());
        // A window after firing, the increase over the last window (from 20 s: 13 → 20) is 7.
        let fired = e.evaluate(at(80), &m(20));
        assert_eq!(fired.iter().map(|a| a.value).collect::<Vec<_>>(), vec![7.0]);
        // Nothing new for a whole window: the increase falls to 0 and it stays quiet.
        for s in (90..300).step_by(10) {
            assert!(e.evaluate(at(s), &m(20)).is_empty(), "at {s}");
        }
    }

    #[test]
    fn a_value_fires_while_over_once_per_window() {
        let mut e = Evaluator::new(rules(Condition::Value));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(e.evaluate(at(0), "m 3\n").len(), 1);
        assert!(e.evaluate(at(59), "m 3\n").is_empty());
        assert_eq!(e.evaluate(at(60), "m 3\n").len(), 1);
        assert!(e.evaluate(at(200), "m 1\n").is_empty());
    }

    #[test]
    fn bad_files_say_where() {
        let p = Path::new("rules.json");
        let err = AlertRules::parse("{\n  \"rules\": [ {\"name\": \"a\"} ]\n}", p)
            .expect_err("missing fields");
        assert!(
            matches!(err, AlertError::Parse { line: 2, .. }) && err.to_string().contains("metric"),
            "{err}"
        );
        let err = AlertRules::parse("{\"rules\": [], \"hook\": \"x\"}", p).expect_err("unknown");
        assert!(err.to_string().contains("unknown field `hook`"), "{err}");
        let bad_window =
            r#"{"rules": [{"name": "a", "metric": "m", "over": 1, "window_secs": 0}]}"#;
        let err = AlertRules::parse(bad_window, p).expect_err("window");
        assert_eq!(
            err.to_string(),
            "alert rules rules.json: rules[0].window_secs: must be a positive number of seconds"
        );
        let err = AlertRules::parse(r#"{"webhook": "ftp://x", "rules": []}"#, p).expect_err("url");
        assert!(
            err.to_string().contains("webhook: must be an http(s) URL"),
            "{err}"
        );
        let ok = AlertRules::parse(
            r#"{"webhook": "http://127.0.0.1:1/a", "rules": [{"name": "a", "metric": "spike_connections", "condition": "value", "over": 1, "window_secs": 5}]}"#,
            p,
        )
        .expect("valid");
        assert_eq!(ok.interval_secs, 10.0);
        assert_eq!(ok.rules[0].condition, Condition::Value);
    }
}
