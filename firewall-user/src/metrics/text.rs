//! Reading the Prometheus text format back: `smf-firewall top` and the tests read the daemon's
//! `/metrics` through this, so they see exactly what Prometheus sees.

use std::fmt;

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the metrics is not in the Prometheus text format: {problem}")]
pub struct ParseError {
    pub line: usize,
    pub problem: &'static str,
}

/// Every sample of an exposition, in order; comments and blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|(index, line)| {
            sample(line).map_err(|problem| ParseError {
                line: index + 1,
                problem,
            })
        })
        .collect()
}

fn sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name");
    }
    let (labels, rest) = if line[name_end..].starts_with('{') {
        labels(&line[name_end + 1..])?
    } else {
        (Vec::new(), &line[name_end..])
    };
    // A timestamp may follow the value.
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = value.parse().map_err(|_| "the value is not a number")?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Label names and values, in the order written.
type Labels = Vec<(String, String)>;

/// Parses `a="x",b="y"}` and returns the labels and what follows the closing brace.
fn labels(mut text: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (key, rest) = text
            .split_once("=\"")
            .ok_or("a label has no quoted value")?;
        let (value, rest) = quoted(rest)?;
        labels.push((key.trim().to_string(), value));
        text = rest;
    }
}

/// Reads a label value up to its closing quote, undoing the format's escapes.
fn quoted(text: &str) -> Result<(String, &str), &'static str> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[index + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, escaped)) => value.push(escaped),
                None => break,
            },
            _ => value.push(c),
        }
    }
    Err("a label value is not closed")
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if !self.labels.is_empty() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(key, value)| format!("{key}={value:?}"))
                .collect();
            write!(f, "{{{}}}", labels.join(","))?;
        }
        write!(f, " {}", self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_escapes_values_and_timestamps() {
        let text = "# HELP a help\n# TYPE a counter\n\
                    a{interface=\"lan0\",verdict=\"pass\"} 12\n\
                    b 3.5 1700000000000\n\
                    c{rule=\"say \\\"hi\\\", \\\\ then\\nbye\"} +Inf\n\n\
                    d{} -1e3\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].name, "a");
        assert_eq!(samples[0].label("verdict"), Some("pass"));
        assert_eq!(samples[0].value, 12.0);
        assert_eq!((samples[1].name.as_str(), samples[1].value), ("b", 3.5));
        assert_eq!(samples[2].label("rule"), Some("say \"hi\", \\ then\nbye"));
        assert_eq!(samples[2].value, f64::INFINITY);
        assert!(samples[3].labels.is_empty());
        assert_eq!(samples[3].value, -1000.0);
    }

    // Each row: a broken line and what is wrong with it.
    #[test]
    fn broken_lines_are_errors_with_their_line() {
        let cases = [
            ("a", "no value"),
            ("a{b=\"c 1", "not closed"),
            ("a{b} 1", "no quoted value"),
            ("a x", "not a number"),
            ("{b=\"c\"} 1", "no metric name"),
        ];
        for (line, problem) in cases {
            let err = parse(&format!("ok 1\n{line}\n")).unwrap_err();
            assert_eq!(err.line, 2, "{line}");
            assert!(err.problem.contains(problem), "{line}: {err}");
        }
    }
}
