//! min / median / max per measure and column, the Markdown table, and the JSON.

use super::machine::Machine;
use super::{Column, MEASURES, Measure, Outcome, Sample, Target};
use serde_json::{Value, json};

/// The numbers of one measure and column.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Sorted; over-cap values are +∞ here.
    values: Vec<f64>,
    cap: Option<f64>,
    failed: usize,
    /// Counts show without decimals.
    integer: bool,
}

impl Stats {
    pub fn of(samples: &[Sample], measure: &str, column: Column) -> Stats {
        let mut s = Stats {
            integer: super::measure(measure).is_some_and(|m| m.unit.is_empty()),
            ..Stats::default()
        };
        for x in samples
            .iter()
            .filter(|x| x.measure == measure && x.column == column)
        {
            match &x.outcome {
                Outcome::Value(v) => s.values.push(*v),
                Outcome::OverCap(c) => {
                    s.values.push(f64::INFINITY);
                    s.cap = Some(*c);
                }
                Outcome::Failed(_) => s.failed += 1,
            }
        }
        s.values.sort_by(f64::total_cmp);
        s
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn min(&self) -> Option<f64> {
        self.values.first().copied()
    }

    pub fn max(&self) -> Option<f64> {
        self.values.last().copied()
    }

    /// The median (mean of the middle two for an even count).
    pub fn median(&self) -> Option<f64> {
        let n = self.values.len();
        if n == 0 {
            return None;
        }
        Some(if n % 2 == 1 {
            self.values[n / 2]
        } else {
            (self.values[n / 2 - 1] + self.values[n / 2]) / 2.0
        })
    }

    fn show(&self, v: Option<f64>) -> String {
        match v {
            None => "–".into(),
            Some(v) if v.is_infinite() => format!("> {}", number(self.cap.unwrap_or(0.0))),
            Some(v) if self.integer => format!("{v:.0}"),
            Some(v) => number(v),
        }
    }

    /// `min / median / max`, with the count of failed runs.
    pub fn cell(&self) -> String {
        if self.is_empty() {
            return if self.failed > 0 {
                format!("all {} failed", self.failed)
            } else {
                "–".into()
            };
        }
        let mut s = if self.values.len() == 1 {
            self.show(self.min())
        } else {
            format!(
                "{} / {} / {}",
                self.show(self.min()),
                self.show(self.median()),
                self.show(self.max())
            )
        };
        if self.failed > 0 {
            s.push_str(&format!(" ({} failed)", self.failed));
        }
        s
    }
}

/// A number with as many digits as it deserves.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// (what to show against the reference, PASS/MISS) for one column.
fn judge(m: &Measure, col: &Stats, reference: &Stats) -> (String, Option<bool>) {
    let Some(median) = col.median() else {
        return (String::new(), None);
    };
    match m.target {
        Target::RatioAtMost(x) => match reference.median() {
            Some(r) if r > 0.0 && r.is_finite() => {
                let ratio = median / r;
                (format!("{ratio:.2}"), Some(ratio <= x))
            }
            _ => ("no reference".into(), None),
        },
        Target::ReferencePlus(x) => match reference.median() {
            Some(r) => {
                let d = median - r;
                (
                    format!(
                        "{}{} {}",
                        if d >= 0.0 { "+" } else { "" },
                        number(d),
                        m.unit
                    ),
                    Some(d <= x),
                )
            }
            None => ("no reference".into(), None),
        },
        Target::MedianAtMost(x) => (String::new(), Some(median <= x)),
        Target::MaxAtMost(x) => (String::new(), col.max().map(|v| v <= x)),
        Target::Breakdown => match reference.median() {
            Some(r) => (format!("+{} {}", number(median - r), m.unit), None),
            None => (String::new(), None),
        },
        Target::Exactly(x) => (
            String::new(),
            Some(col.values.iter().all(|v| *v == x) && col.failed == 0),
        ),
    }
}

fn verdict(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "n/a",
    }
}

/// The Markdown table: one row per measure that has samples.
pub fn table(samples: &[Sample], baseline: bool, runs: usize) -> String {
    let mut out = String::new();
    let mut header = format!("| measure ({runs} runs; min / median / max) | target | agent |");
    let mut rule = String::from("| --- | --- | --- |");
    if baseline {
        header.push_str(" baseline |");
        rule.push_str(" --- |");
    }
    header.push_str(" reference | vs reference (median) | verdict |");
    rule.push_str(" --- | --- | --- |");
    out.push_str(&header);
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    for m in MEASURES {
        let agent = Stats::of(samples, m.name, Column::Agent);
        let base = Stats::of(samples, m.name, Column::Baseline);
        let reference = Stats::of(samples, m.name, Column::Reference);
        if agent.is_empty() && agent.failed == 0 && base.is_empty() && base.failed == 0 {
            continue;
        }
        let unit = if m.unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", m.unit)
        };
        let (vs_a, ok_a) = judge(m, &agent, &reference);
        let (vs_b, ok_b) = judge(m, &base, &reference);
        let mut row = format!(
            "| {}{unit} | {} | {} |",
            m.title,
            m.target_text,
            agent.cell()
        );
        if baseline {
            row.push_str(&format!(" {} |", base.cell()));
        }
        let ref_cell = match m.reference {
            Some(what) if !reference.is_empty() || reference.failed > 0 => {
                format!("{}: {}", what, reference.cell())
            }
            _ => String::new(),
        };
        let (vs, v) = if baseline {
            let vs = match (vs_a.is_empty(), vs_b.is_empty()) {
                (true, true) => String::new(),
                _ => format!("{vs_a} (baseline {vs_b})"),
            };
            (
                vs,
                format!("{} (baseline {})", verdict(ok_a), verdict(ok_b)),
            )
        } else {
            (vs_a, verdict(ok_a).to_string())
        };
        row.push_str(&format!(" {ref_cell} | {vs} | {v} |"));
        out.push_str(&row);
        out.push('\n');
    }
    out
}

/// Every sample, the machine and what was compared.
pub fn json(samples: &[Sample], machine: &Machine, header: Value) -> Value {
    let list: Vec<Value> = samples
        .iter()
        .map(|s| {
            let (value, over_cap, error) = match &s.outcome {
                Outcome::Value(v) => (json!(v), false, Value::Null),
                Outcome::OverCap(c) => (json!(c), true, Value::Null),
                Outcome::Failed(e) => (Value::Null, false, json!(e)),
            };
            json!({
                "measure": s.measure,
                "unit": super::measure(s.measure).map(|m| m.unit).unwrap_or(""),
                "column": s.column.name(),
                "run": s.run,
                "value": value,
                "over_cap": over_cap,
                "error": error,
                "detail": s.detail,
            })
        })
        .collect();
    let summary: Vec<Value> = MEASURES
        .iter()
        .flat_map(|m| {
            [Column::Agent, Column::Baseline, Column::Reference]
                .into_iter()
                .filter_map(move |c| {
                    let st = Stats::of(samples, m.name, c);
                    let f = |v: Option<f64>| match v {
                        Some(v) if v.is_finite() => json!(v),
                        Some(_) => json!("over cap"),
                        None => Value::Null,
                    };
                    (!st.is_empty() || st.failed > 0).then(|| {
                        json!({"measure": m.name, "column": c.name(), "min": f(st.min()),
                               "median": f(st.median()), "max": f(st.max()),
                               "failed": st.failed, "target": m.target_text})
                    })
                })
        })
        .collect();
    json!({
        "header": header,
        "machine": machine.json(),
        "summary": summary,
        "samples": list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(measure: &'static str, column: Column, outcome: Outcome) -> Sample {
        Sample {
            measure,
            column,
            run: 0,
            outcome,
            detail: Value::Null,
        }
    }

    #[test]
    fn medians_caps_and_verdicts() {
        let s = vec![
            sample("handoff", Column::Agent, Outcome::Value(100.0)),
            sample("handoff", Column::Agent, Outcome::Value(300.0)),
            sample("handoff", Column::Agent, Outcome::Value(200.0)),
            sample("handoff", Column::Reference, Outcome::Value(150.0)),
            sample("fix-name", Column::Agent, Outcome::Value(0.5)),
            sample("fix-name", Column::Agent, Outcome::OverCap(90.0)),
            sample("fix-name", Column::Agent, Outcome::OverCap(90.0)),
            sample("fix-name", Column::Agent, Outcome::Failed("x".into())),
        ];
        let a = Stats::of(&s, "handoff", Column::Agent);
        assert_eq!(a.median(), Some(200.0));
        assert_eq!(a.cell(), "100 / 200 / 300");
        let f = Stats::of(&s, "fix-name", Column::Agent);
        assert_eq!(f.cell(), "0.50 / > 90.0 / > 90.0 (1 failed)");
        let t = table(&s, false, 3);
        assert!(t.contains("| 1.33 | MISS |"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.contains("node-name") && l.ends_with("MISS |"))
        );
    }
}
